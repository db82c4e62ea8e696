-- Context-store collection (docs/adr/0032): when each content was last named by a build, packs no content
-- points at (deleted after the grace period), and how far the collector has read the builds.
ALTER TABLE "ContextBlob" ADD COLUMN "lastUsedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;

CREATE INDEX "ContextBlob_lastUsedAt_idx" ON "ContextBlob"("lastUsedAt");

CREATE TABLE "ContextPackRetired" (
    "key" TEXT NOT NULL,
    "retiredAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ContextPackRetired_pkey" PRIMARY KEY ("key")
);

CREATE TABLE "GcWatermark" (
    "name" TEXT NOT NULL,
    "at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "GcWatermark_pkey" PRIMARY KEY ("name")
);
