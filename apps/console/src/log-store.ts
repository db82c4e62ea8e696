// A build's log as the console holds it: every line once, grouped by step, fed by the SSE endpoint
// and resumed with Last-Event-ID after a dropped connection. React reads it through `version`.
import { ApiError, request } from './api';
import { stripAnsi } from './ansi';

export interface LogLine {
  /** 1-based position in the whole log, as `#L<n>` permalinks name it. */
  n: number;
  section: string;
  stream: 'stdout' | 'stderr' | 'system';
  raw: string;
  /** Lower-cased text without escapes, for search: made on the first search, not on arrival. */
  lower: string | null;
  /** Position within its section's lines, to find its row. */
  pos: number;
  time: string;
}

export interface LogSection {
  key: string;
  stage: number | null;
  step: number | null;
  instruction: string | null;
  status: 'running' | 'done' | null;
  cached: boolean;
  durationMs: number | null;
  /** When this page first heard of the step running (live only). */
  seenRunningAt: number | null;
  lines: number[];
}

type Event =
  | { type: 'log'; stage: number | null; step: number | null; stream: LogLine['stream']; line: string; time: string }
  | { type: 'step'; stage: number; index: number; instruction: string; status: 'running' | 'done'; cached: boolean; durationMs: number | null }
  | { type: 'end'; status: string };

function sectionKey(stage: number | null, step: number | null): string {
  return stage === null || step === null ? 'build' : `${stage}:${step}`;
}

export class LogStore {
  readonly lines: LogLine[] = [];
  readonly sections = new Map<string, LogSection>();
  /** Section keys in the order they first appeared. */
  readonly order: string[] = [];
  lastEventId: string | null = null;
  ended: string | null = null;
  /** The connection state the page shows: live, reconnecting after a drop, or done. */
  connection: 'connecting' | 'live' | 'reconnecting' | 'closed' = 'connecting';
  error: string | null = null;
  version = 0;
  private readonly listeners = new Set<() => void>();
  private scheduled: ReturnType<typeof setTimeout> | null = null;
  private stepListeners = new Set<() => void>();

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getVersion = (): number => this.version;

  /** Called when a step starts or ends, or the build ends: the build's JSON is worth re-reading. */
  onStepChange(listener: () => void): () => void {
    this.stepListeners.add(listener);
    return () => this.stepListeners.delete(listener);
  }

  private section(stage: number | null, step: number | null): LogSection {
    let key = sectionKey(stage, step);
    // Lines about the whole build keep their place: those after a step get a section of their own.
    if (key === 'build') {
      const last = this.order[this.order.length - 1];
      key = last?.startsWith('build') ? last : `build#${this.order.length}`;
    }
    let s = this.sections.get(key);
    if (!s) {
      s = { key, stage, step, instruction: null, status: null, cached: false, durationMs: null, seenRunningAt: null, lines: [] };
      this.sections.set(key, s);
      this.order.push(key);
    }
    return s;
  }

  apply(event: Event, live: boolean): void {
    if (event.type === 'log') {
      const s = this.section(event.stage, event.step);
      // A message with line breaks (a build error quoting output) takes one row per line: rows have one height.
      for (const text of event.line.includes('\n') ? event.line.split('\n') : [event.line]) {
        const n = this.lines.length + 1;
        this.lines.push({ n, section: s.key, stream: event.stream, raw: text, lower: null, pos: s.lines.length, time: event.time });
        s.lines.push(n - 1);
      }
    } else if (event.type === 'step') {
      const s = this.section(event.stage, event.index);
      s.instruction = event.instruction;
      s.status = event.status;
      s.cached = event.cached;
      s.durationMs = event.durationMs;
      if (event.status === 'running' && live) s.seenRunningAt = Date.now();
      for (const l of this.stepListeners) l();
    } else if (event.type === 'end') {
      this.ended = event.status;
      for (const l of this.stepListeners) l();
    }
  }

  /** Indexes of the lines containing `query` (lower case), over the whole log. */
  search(query: string): number[] {
    const out: number[] = [];
    const lines = this.lines;
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i];
      l.lower ??= stripAnsi(l.raw).toLowerCase();
      if (l.lower.includes(query)) out.push(i);
    }
    return out;
  }

  /** Coalesces many events into one render. */
  changed(): void {
    if (this.scheduled) return;
    this.scheduled = setTimeout(() => {
      this.scheduled = null;
      this.version++;
      for (const l of this.listeners) l();
    }, 40);
  }

  /** Reads the SSE stream until `end`, reconnecting with Last-Event-ID when the connection drops. */
  async follow(buildId: string, signal: AbortSignal): Promise<void> {
    let delay = 500;
    while (!signal.aborted && this.ended === null) {
      const started = Date.now();
      try {
        const headers: Record<string, string> = { accept: 'text/event-stream' };
        if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
        const res = await request(`/v1/builds/${encodeURIComponent(buildId)}/logs`, { headers, signal });
        this.connection = 'live';
        this.changed();
        await this.read(res, signal);
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          this.error = e.message;
          this.connection = 'closed';
          this.changed();
          return;
        }
      }
      if (this.ended !== null || signal.aborted) break;
      this.connection = 'reconnecting';
      this.changed();
      delay = Date.now() - started > 10_000 ? 500 : Math.min(delay * 2, 8000);
      await new Promise((r) => setTimeout(r, delay));
    }
    this.connection = 'closed';
    this.changed();
  }

  private async read(res: Response, signal: AbortSignal): Promise<void> {
    if (!res.body) return;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const abort = () => void reader.cancel().catch(() => undefined);
    signal.addEventListener('abort', abort);
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let at = 0;
        for (let sep = buf.indexOf('\n\n', at); sep >= 0; sep = buf.indexOf('\n\n', at)) {
          this.message(buf.slice(at, sep));
          at = sep + 2;
        }
        buf = buf.slice(at);
        this.changed();
        if (this.ended !== null) return;
      }
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }

  /** One SSE message: `id:`, `event:` and `data:` fields, one a line (comments start with ':'). */
  private message(block: string): void {
    let id: string | null = null;
    let data: string | null = null;
    let eventName = 'message';
    let at = 0;
    while (at < block.length) {
      let end = block.indexOf('\n', at);
      if (end < 0) end = block.length;
      if (block.charCodeAt(at) !== 58 /* ':' */) {
        const colon = block.indexOf(':', at);
        const field = colon < 0 || colon > end ? block.slice(at, end) : block.slice(at, colon);
        let from = colon < 0 || colon > end ? end : colon + 1;
        if (block.charCodeAt(from) === 32) from++;
        const value = block.slice(from, end);
        if (field === 'data') data = data === null ? value : `${data}\n${value}`;
        else if (field === 'id') id = value;
        else if (field === 'event') eventName = value;
      }
      at = end + 1;
    }
    if (data === null) return;
    const event = JSON.parse(data) as Event;
    (event as { type: string }).type = eventName;
    this.apply(event, this.connection === 'live');
    if (id !== null) this.lastEventId = id;
  }
}
