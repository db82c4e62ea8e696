// Parser benchmark: a 2,000-line Dockerfile through @strata/dockerfile's parseDockerfile, median of
// many parses after a warm-up, against the 20 ms target. No peer. Writes JSON to $BENCH_OUT.
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseDockerfile } from '@strata/dockerfile';

const LINES = Number(process.env.BENCH_PARSE_LINES ?? 2000);
const ITERATIONS = Number(process.env.BENCH_PARSE_ITERATIONS ?? 200);
const TARGET_MS = 20;

/** A realistic mix: stages, ARG/ENV with expansion, RUN with continuations and heredocs, COPY flags, comments. */
function makeDockerfile(lines: number): string {
  const out: string[] = ['# syntax=docker/dockerfile:1', 'ARG BASE=busybox:1.36', 'ARG VERSION=1.0.0'];
  // Whole units only (a RUN is never cut mid-continuation); comment lines fill up to the exact count.
  const add = (unit: string[]) => {
    if (out.length + unit.length > lines) return false;
    out.push(...unit);
    return true;
  };
  for (let stage = 0; ; stage++) {
    if (!add([`FROM \${BASE} AS stage${stage}`, 'ARG VERSION', `ENV APP_HOME=/opt/app${stage} PATH=/opt/app${stage}/bin:$PATH VERSION=\${VERSION}`,
      'WORKDIR $APP_HOME', `# build step group ${stage}`])) break;
    for (let i = 0; i < 10; i++) {
      add([
        'RUN set -eux; \\',
        `    mkdir -p "$APP_HOME/part${i}" && \\`,
        `    echo "stage ${stage} part ${i} \${VERSION:-dev}" > "$APP_HOME/part${i}/info" && \\`,
        '    ls -la "$APP_HOME" | wc -l',
        `COPY --chown=1000:1000 --chmod=644 src/part${i}/*.txt ./part${i}/`,
        `LABEL org.example.stage${stage}.part${i}="value ${i}" org.example.version="\${VERSION}"`,
      ]);
    }
    if (stage > 0) add([`COPY --from=stage${stage - 1} /opt/app${stage - 1}/ /opt/prev/`]);
    add(['RUN --mount=type=cache,target=/root/.cache --network=none <<EOF', `echo heredoc ${stage}`, 'ls /opt', 'EOF']);
    add([`EXPOSE 80${stage % 10}/tcp`, 'USER 1000:1000', 'HEALTHCHECK --interval=30s CMD ["/bin/true"]', `CMD ["/bin/sh", "-c", "echo ${stage}"]`, '']);
  }
  while (out.length < lines) out.push(`# filler ${out.length}`);
  return `${out.join('\n')}\n`;
}

const text = makeDockerfile(LINES);
const first = parseDockerfile(text) as { errors?: unknown[]; stages?: unknown[] };
const errors = first.errors ?? [];
if (errors.length > 0) throw new Error(`the generated Dockerfile has parse errors: ${JSON.stringify(errors.slice(0, 3))}`);
for (let i = 0; i < 20; i++) parseDockerfile(text); // warm-up (JIT)
const times: number[] = [];
for (let i = 0; i < ITERATIONS; i++) {
  const t0 = performance.now();
  parseDockerfile(text);
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const median = times[times.length >> 1]!;
const p95 = times[Math.floor(times.length * 0.95)]!;
const result = {
  lines: text.split('\n').length - 1,
  bytes: Buffer.byteLength(text),
  stages: first.stages?.length ?? null,
  iterations: ITERATIONS,
  medianMs: median,
  p95Ms: p95,
  minMs: times[0],
  targetMs: TARGET_MS,
  ratioToTarget: median / TARGET_MS,
};
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(result, null, 2));
else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
