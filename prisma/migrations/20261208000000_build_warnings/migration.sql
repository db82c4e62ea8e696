-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "warnings" JSONB NOT NULL DEFAULT '[]';
