-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "baseImageDigest" TEXT,
ADD COLUMN     "baseImageRef" TEXT,
ADD COLUMN     "baseImageSource" TEXT,
ADD COLUMN     "registryAuthSealed" BYTEA;

