-- /metrics without scanning history: build and step duration histograms kept by triggers, read as a
-- few rows per scrape. And context uploads in progress, so a killed api's half-made upload is swept.
-- Prisma's pg adapter runs a migration split at every semicolon: none may appear inside a statement
-- (nor in a comment), so the PL/pgSQL bodies are E'' strings whose statement ends are written \073.

-- CreateTable
CREATE TABLE "DurationHistogram" (
    "metric" TEXT NOT NULL,
    "label" TEXT NOT NULL,
    "le" DOUBLE PRECISION NOT NULL,
    "count" BIGINT NOT NULL DEFAULT 0,
    "sum" DOUBLE PRECISION NOT NULL DEFAULT 0,

    CONSTRAINT "DurationHistogram_pkey" PRIMARY KEY ("metric","label","le")
);

-- CreateTable
CREATE TABLE "ContextUpload" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "queue" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ContextUpload_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "ContextUpload_queue_updatedAt_idx" ON "ContextUpload"("queue", "updatedAt");

-- One observation: +1 in every bucket whose bound it is within, and in the total (le = Infinity) with its value added to the sum.
CREATE FUNCTION strata_observe_duration(m TEXT, l TEXT, d DOUBLE PRECISION, les DOUBLE PRECISION[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO "DurationHistogram" ("metric", "label", "le", "count", "sum")
  SELECT m, l, b.le, 1, CASE WHEN b.le = 'Infinity' THEN d ELSE 0 END
  FROM unnest(les || 'Infinity'::DOUBLE PRECISION) AS b(le)
  WHERE d <= b.le
  ON CONFLICT ("metric", "label", "le") DO UPDATE SET "count" = "DurationHistogram"."count" + 1, "sum" = "DurationHistogram"."sum" + EXCLUDED."sum"
$$;

-- The bounds here are BUILD_BUCKETS and STEP_BUCKETS of apps/api/src/metrics/metrics.service.ts.
CREATE FUNCTION strata_build_finished() RETURNS trigger LANGUAGE plpgsql AS E'
BEGIN
  IF NEW."status" IN (''succeeded'', ''failed'', ''cancelled'') AND OLD."status" IS DISTINCT FROM NEW."status"
     AND NEW."startedAt" IS NOT NULL AND NEW."finishedAt" IS NOT NULL THEN
    PERFORM strata_observe_duration(''build'', NEW."status"::TEXT, EXTRACT(EPOCH FROM (NEW."finishedAt" - NEW."startedAt"))::DOUBLE PRECISION,
      ARRAY[1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600]::DOUBLE PRECISION[])\073
  END IF\073
  RETURN NULL\073
END
';

CREATE TRIGGER "Build_duration_histogram" AFTER UPDATE OF "status" ON "Build" FOR EACH ROW EXECUTE FUNCTION strata_build_finished();

CREATE FUNCTION strata_step_finished() RETURNS trigger LANGUAGE plpgsql AS E'
BEGIN
  PERFORM strata_observe_duration(''step'', CASE WHEN NEW."cached" THEN ''hit'' ELSE ''miss'' END, NEW."durationMs" / 1000.0,
    ARRAY[0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300]::DOUBLE PRECISION[])\073
  RETURN NULL\073
END
';

CREATE TRIGGER "BuildStep_duration_histogram" AFTER INSERT ON "BuildStep" FOR EACH ROW WHEN (NEW."durationMs" IS NOT NULL) EXECUTE FUNCTION strata_step_finished();

-- What was run before this migration, counted once.
INSERT INTO "DurationHistogram" ("metric", "label", "le", "count", "sum")
SELECT 'build', x.outcome, b.le, count(*) FILTER (WHERE x.d <= b.le), CASE WHEN b.le = 'Infinity' THEN coalesce(sum(x.d), 0) ELSE 0 END
FROM (
  SELECT "status"::TEXT AS outcome, EXTRACT(EPOCH FROM ("finishedAt" - "startedAt"))::DOUBLE PRECISION AS d
  FROM "Build" WHERE "finishedAt" IS NOT NULL AND "startedAt" IS NOT NULL AND "status" IN ('succeeded', 'failed', 'cancelled')
) x
CROSS JOIN unnest(ARRAY[1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 'Infinity']::DOUBLE PRECISION[]) AS b(le)
GROUP BY x.outcome, b.le;

INSERT INTO "DurationHistogram" ("metric", "label", "le", "count", "sum")
SELECT 'step', x.cache, b.le, count(*) FILTER (WHERE x.d <= b.le), CASE WHEN b.le = 'Infinity' THEN coalesce(sum(x.d), 0) ELSE 0 END
FROM (SELECT CASE WHEN "cached" THEN 'hit' ELSE 'miss' END AS cache, "durationMs" / 1000.0 AS d FROM "BuildStep" WHERE "durationMs" IS NOT NULL) x
CROSS JOIN unnest(ARRAY[0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 'Infinity']::DOUBLE PRECISION[]) AS b(le)
GROUP BY x.cache, b.le;
