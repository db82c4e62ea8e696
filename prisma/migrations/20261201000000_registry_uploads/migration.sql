-- Registry uploads in progress and blob-to-repository links (written by hand: `migrate diff
-- --from-migrations` fails here on the shadow database, see STACK-NOTES.md).

-- CreateTable
CREATE TABLE "BlobUpload" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "repositoryId" UUID NOT NULL,
    "size" BIGINT NOT NULL DEFAULT 0,
    "parts" TEXT[],
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "BlobUpload_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "RepositoryBlob" (
    "repositoryId" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "digest" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "RepositoryBlob_pkey" PRIMARY KEY ("repositoryId","digest")
);

-- CreateIndex
CREATE INDEX "BlobUpload_tenantId_idx" ON "BlobUpload"("tenantId");

-- CreateIndex
CREATE INDEX "BlobUpload_updatedAt_idx" ON "BlobUpload"("updatedAt");

-- CreateIndex
CREATE INDEX "RepositoryBlob_digest_idx" ON "RepositoryBlob"("digest");

-- AddForeignKey
ALTER TABLE "BlobUpload" ADD CONSTRAINT "BlobUpload_repositoryId_fkey" FOREIGN KEY ("repositoryId") REFERENCES "Repository"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "RepositoryBlob" ADD CONSTRAINT "RepositoryBlob_repositoryId_fkey" FOREIGN KEY ("repositoryId") REFERENCES "Repository"("id") ON DELETE CASCADE ON UPDATE CASCADE;
