-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "commitSha" TEXT,
ADD COLUMN     "gitSource" JSONB;

-- CreateTable
CREATE TABLE "Trigger" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "repository" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "cloneUrl" TEXT NOT NULL,
    "apiUrl" TEXT,
    "secretSealed" BYTEA NOT NULL,
    "credentialsSealed" BYTEA,
    "rules" JSONB NOT NULL,
    "dockerfilePath" TEXT NOT NULL DEFAULT 'Dockerfile',
    "contextPath" TEXT NOT NULL DEFAULT '.',
    "buildArgs" JSONB NOT NULL DEFAULT '{}',
    "target" TEXT,
    "paths" JSONB,
    "submodules" BOOLEAN NOT NULL DEFAULT false,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Trigger_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "WebhookDelivery" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "triggerId" UUID NOT NULL,
    "deliveryId" TEXT NOT NULL,
    "event" TEXT NOT NULL,
    "ref" TEXT,
    "sha" TEXT,
    "outcome" TEXT NOT NULL,
    "reason" TEXT,
    "buildId" UUID,
    "push" JSONB,
    "statusReports" JSONB NOT NULL DEFAULT '[]',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "WebhookDelivery_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Trigger_tenantId_createdAt_idx" ON "Trigger"("tenantId", "createdAt");

-- CreateIndex
CREATE INDEX "WebhookDelivery_triggerId_createdAt_idx" ON "WebhookDelivery"("triggerId", "createdAt");

-- CreateIndex
CREATE UNIQUE INDEX "WebhookDelivery_triggerId_deliveryId_key" ON "WebhookDelivery"("triggerId", "deliveryId");

-- CreateIndex
CREATE INDEX "Build_tenantId_commitSha_idx" ON "Build"("tenantId", "commitSha");

-- AddForeignKey
ALTER TABLE "Trigger" ADD CONSTRAINT "Trigger_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "WebhookDelivery" ADD CONSTRAINT "WebhookDelivery_triggerId_fkey" FOREIGN KEY ("triggerId") REFERENCES "Trigger"("id") ON DELETE CASCADE ON UPDATE CASCADE;

