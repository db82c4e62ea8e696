-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "secretsSealed" BYTEA;

