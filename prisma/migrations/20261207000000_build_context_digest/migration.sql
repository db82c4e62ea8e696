-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "contextDigest" TEXT;

