-- AlterTable
ALTER TABLE "ApiToken" ADD COLUMN     "oidcSubject" TEXT;

-- CreateTable
CREATE TABLE "OidcTrustPolicy" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "issuer" TEXT NOT NULL,
    "audience" TEXT NOT NULL,
    "claims" JSONB NOT NULL,
    "scopes" TEXT[],
    "repositories" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "ttlSeconds" INTEGER NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "OidcTrustPolicy_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "OidcSeenToken" (
    "issuer" TEXT NOT NULL,
    "jti" TEXT NOT NULL,
    "expiresAt" TIMESTAMP(3) NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "OidcSeenToken_pkey" PRIMARY KEY ("issuer","jti")
);

-- CreateIndex
CREATE INDEX "OidcTrustPolicy_issuer_idx" ON "OidcTrustPolicy"("issuer");

-- CreateIndex
CREATE INDEX "OidcTrustPolicy_tenantId_idx" ON "OidcTrustPolicy"("tenantId");

-- CreateIndex
CREATE INDEX "OidcSeenToken_expiresAt_idx" ON "OidcSeenToken"("expiresAt");

-- AddForeignKey
ALTER TABLE "OidcTrustPolicy" ADD CONSTRAINT "OidcTrustPolicy_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant"("id") ON DELETE CASCADE ON UPDATE CASCADE;
