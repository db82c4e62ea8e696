-- AlterTable
ALTER TABLE "BuildStep" ADD COLUMN     "fingerprint" JSONB,
ADD COLUMN     "startedAt" TIMESTAMP(3);

