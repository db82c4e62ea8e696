-- AlterTable
ALTER TABLE "Tenant" ADD COLUMN     "maxConcurrentBuilds" INTEGER,
ADD COLUMN     "maxQueuedBuilds" INTEGER,
ADD COLUMN     "maxBuildMinutesPerMonth" INTEGER,
ADD COLUMN     "maxStoredBytes" BIGINT,
ADD COLUMN     "requestsPerMinute" INTEGER;

-- AlterTable
ALTER TABLE "ApiToken" ADD COLUMN     "repositories" TEXT[] DEFAULT ARRAY[]::TEXT[],
ADD COLUMN     "expiresAt" TIMESTAMP(3);

-- Tokens issued before scopes were enforced could do everything: they keep doing so, as admin.
UPDATE "ApiToken" SET "scopes" = ARRAY['admin']::TEXT[];

-- AlterTable
ALTER TABLE "AuditEvent" ADD COLUMN     "sourceIp" TEXT;

-- CreateIndex
CREATE INDEX "AuditEvent_tenantId_action_createdAt_idx" ON "AuditEvent"("tenantId", "action", "createdAt");

-- The audit log is append-only: no UPDATE or DELETE, whoever asks.
-- Prisma's migration runner splits scripts at every semicolon, even inside quotes: the body's own
-- semicolon is written as the escape \073.
CREATE FUNCTION "audit_event_append_only"() RETURNS trigger LANGUAGE plpgsql AS
  E'BEGIN RAISE EXCEPTION ''the audit log is append-only: % on "AuditEvent" is refused'', TG_OP\073 END';

CREATE TRIGGER "AuditEvent_append_only" BEFORE UPDATE OR DELETE ON "AuditEvent"
  FOR EACH ROW EXECUTE FUNCTION "audit_event_append_only"();
