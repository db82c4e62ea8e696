-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "noCacheFilter" TEXT[] DEFAULT ARRAY[]::TEXT[];

