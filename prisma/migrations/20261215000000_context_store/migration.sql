-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "contextFormat" TEXT NOT NULL DEFAULT 'tar';

-- CreateTable
CREATE TABLE "ContextBlob" (
    "tenantId" UUID NOT NULL,
    "digest" TEXT NOT NULL,
    "packKey" TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    "size" BIGINT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ContextBlob_pkey" PRIMARY KEY ("tenantId","digest")
);

-- CreateIndex
CREATE INDEX "ContextBlob_packKey_idx" ON "ContextBlob"("packKey");

-- AddForeignKey
ALTER TABLE "ContextBlob" ADD CONSTRAINT "ContextBlob_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant"("id") ON DELETE CASCADE ON UPDATE CASCADE;
