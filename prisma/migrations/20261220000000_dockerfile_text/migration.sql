-- The Dockerfile read from a tar context at upload (docs/adr/0041): the worker starts the steps that
-- do not read the context while the context is fetched and indexed.
ALTER TABLE "Build" ADD COLUMN "dockerfileText" TEXT;
