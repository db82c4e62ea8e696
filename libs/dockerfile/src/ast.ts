import type { GitSource } from './git-ref.js';
import type { Diagnostic } from './diagnostics.js';

/** The two escape tokens a `# escape=` directive may choose. */
export type EscapeToken = '\\' | '`';

/** A parser directive from the top of the file (`# syntax=`, `# escape=`, `# check=`). */
export interface Directive {
  /** Lower-cased directive name. */
  name: 'syntax' | 'escape' | 'check';
  value: string;
  line: number;
}

/** The parsed `# check=` directive: which lint rules to skip and whether warnings fail the build. */
export interface CheckConfig {
  /** Rule names to skip, or `'all'`. */
  skip: string[] | 'all';
  /** `error=true`: lint warnings become errors. */
  error: boolean;
}

/** A `--name=value` or `--name` flag as written on an instruction, quotes removed. */
export interface Flag {
  name: string;
  /** `null` when written without `=` (a boolean flag set to true). */
  value: string | null;
  line: number;
  column: number;
}

/**
 * A heredoc body attached to RUN, COPY or ADD (`<<EOF`, `<<-EOF`, `<<"EOF"`).
 * `content` ends with a newline per line; for `<<-` leading tabs are already removed.
 */
export interface Heredoc {
  /** The delimiter word, quotes removed. */
  name: string;
  /** The file descriptor written before `<<` (as in `3<<EOF`), or null. */
  fd: number | null;
  /** False when the delimiter was quoted: the body is then taken literally. */
  expand: boolean;
  /** True for `<<-` (leading tabs stripped from the body and the terminator). */
  chomp: boolean;
  content: string;
  /** 1-based line of the first body line. */
  line: number;
}

/** A command line as RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD take it. */
export type CommandLine =
  | { form: 'shell'; command: string }
  | { form: 'exec'; args: string[] };

/** A key/value pair of ENV or LABEL, unexpanded (quotes and escapes still in place). */
export interface KeyValue {
  key: string;
  value: string;
  /** True for the legacy `ENV KEY value` form (LegacyKeyValueFormat). */
  legacy: boolean;
}

/** An ARG declaration: `NAME` or `NAME=default` (default unexpanded). */
export interface ArgDeclaration {
  name: string;
  defaultValue: string | null;
}

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type CacheSharing = 'shared' | 'private' | 'locked';

/** A `RUN --mount=...` option parsed into its fields. Unset options are null. */
export interface Mount {
  type: MountType;
  /** Stage name or image the bind/cache mount is taken from. */
  from: string | null;
  source: string | null;
  target: string | null;
  readOnly: boolean;
  /** Cache id for cache mounts; secret or ssh id for those. */
  id: string | null;
  sharing: CacheSharing | null;
  required: boolean;
  /** tmpfs size limit in bytes. */
  size: number | null;
  mode: number | null;
  uid: number | null;
  gid: number | null;
  /** Secret mounts: expose the secret as this environment variable. */
  env: string | null;
  /** The option text as written (after flag unquoting). */
  raw: string;
}

export type NetworkMode = 'default' | 'none' | 'host';
export type SecurityMode = 'sandbox' | 'insecure';

/** Fields every instruction has. */
export interface InstructionBase {
  /** The keyword upper-cased. */
  keyword: Keyword;
  /** The keyword as written (for casing checks). */
  keywordAsWritten: string;
  /** 1-based line where the instruction starts. */
  line: number;
  /** 1-based last line, including continuation lines and heredoc bodies. */
  endLine: number;
  /** 1-based column of the keyword. */
  column: number;
  /** The instruction text with continuations joined (BuildKit's `Original`), heredoc bodies excluded. */
  original: string;
  /** Flags as written, in order. */
  flags: Flag[];
}

export interface FromInstruction extends InstructionBase {
  keyword: 'FROM';
  /** The base reference as written, unexpanded (`${BASE}:latest`, `scratch`, a stage name). */
  image: string;
  /** `--platform` as written, unexpanded. */
  platform: string | null;
  /** Stage name lower-cased, or null without `AS`. */
  stageName: string | null;
  /** Stage name as written. */
  stageNameAsWritten: string | null;
}

export interface RunInstruction extends InstructionBase {
  keyword: 'RUN';
  cmd: CommandLine;
  heredocs: Heredoc[];
  mounts: Mount[];
  network: NetworkMode | null;
  security: SecurityMode | null;
}

export interface CmdInstruction extends InstructionBase {
  keyword: 'CMD';
  cmd: CommandLine;
}

export interface EntrypointInstruction extends InstructionBase {
  keyword: 'ENTRYPOINT';
  cmd: CommandLine;
}

export interface LabelInstruction extends InstructionBase {
  keyword: 'LABEL';
  pairs: KeyValue[];
}

export interface ExposeInstruction extends InstructionBase {
  keyword: 'EXPOSE';
  /** Port words as written (`80`, `443/tcp`, `8000-8010`, `${PORT}`). */
  ports: string[];
}

export interface EnvInstruction extends InstructionBase {
  keyword: 'ENV';
  pairs: KeyValue[];
}

/** What an ADD source names, once expanded. */
export type AddSource = { kind: 'local'; path: string } | { kind: 'url'; url: string } | GitSource;

interface CopyLike extends InstructionBase {
  /** Source paths as written (heredoc sources are in `heredocs`). */
  sources: string[];
  /** Heredoc bodies used as sources, in order. */
  heredocs: Heredoc[];
  dest: string;
  /** `json` for the `["src", "dest"]` form. */
  form: 'shell' | 'json';
  chown: string | null;
  chmod: string | null;
  link: boolean;
  excludes: string[];
}

export interface AddInstruction extends CopyLike {
  keyword: 'ADD';
  keepGitDir: boolean | null;
  checksum: string | null;
  unpack: boolean | null;
}

export interface CopyInstruction extends CopyLike {
  keyword: 'COPY';
  /** `--from` as written: a stage name, a stage index or an image reference. */
  from: string | null;
  parents: boolean;
}

export interface ArgInstruction extends InstructionBase {
  keyword: 'ARG';
  args: ArgDeclaration[];
}

export interface UserInstruction extends InstructionBase {
  keyword: 'USER';
  user: string;
}

export interface WorkdirInstruction extends InstructionBase {
  keyword: 'WORKDIR';
  path: string;
}

export interface VolumeInstruction extends InstructionBase {
  keyword: 'VOLUME';
  paths: string[];
  form: 'shell' | 'json';
}

export interface StopsignalInstruction extends InstructionBase {
  keyword: 'STOPSIGNAL';
  signal: string;
}

/** HEALTHCHECK settings; durations in nanoseconds as in the OCI/Docker image config (null = default). */
export type Healthcheck =
  | { kind: 'none' }
  | {
      kind: 'cmd';
      cmd: CommandLine;
      interval: number | null;
      timeout: number | null;
      startPeriod: number | null;
      startInterval: number | null;
      retries: number | null;
    };

export interface HealthcheckInstruction extends InstructionBase {
  keyword: 'HEALTHCHECK';
  healthcheck: Healthcheck;
}

export interface ShellInstruction extends InstructionBase {
  keyword: 'SHELL';
  shell: string[];
}

export interface OnbuildInstruction extends InstructionBase {
  keyword: 'ONBUILD';
  /** The trigger as stored in the image config (`ONBUILD` removed, heredoc bodies appended). */
  trigger: string;
  /** The trigger parsed, or null when it would fail to parse when triggered (a warning says why). */
  instruction: StageInstruction | null;
}

export interface MaintainerInstruction extends InstructionBase {
  keyword: 'MAINTAINER';
  maintainer: string;
}

/** Every instruction, discriminated by `keyword`. */
export type Instruction =
  | FromInstruction
  | RunInstruction
  | CmdInstruction
  | EntrypointInstruction
  | LabelInstruction
  | ExposeInstruction
  | EnvInstruction
  | AddInstruction
  | CopyInstruction
  | ArgInstruction
  | UserInstruction
  | WorkdirInstruction
  | VolumeInstruction
  | StopsignalInstruction
  | HealthcheckInstruction
  | ShellInstruction
  | OnbuildInstruction
  | MaintainerInstruction;

/** Instructions inside a stage (everything but FROM). */
export type StageInstruction = Exclude<Instruction, FromInstruction>;

/** Upper-cased instruction keywords. */
export type Keyword = Instruction['keyword'];

export const KEYWORDS: readonly Keyword[] = [
  'FROM', 'RUN', 'CMD', 'ENTRYPOINT', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ARG', 'USER',
  'WORKDIR', 'VOLUME', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL', 'ONBUILD', 'MAINTAINER',
];

/** One build stage: its FROM and the instructions after it. */
export interface Stage {
  index: number;
  /** Lower-cased stage name, or null. */
  name: string | null;
  from: FromInstruction;
  instructions: StageInstruction[];
}

/** A parsed Dockerfile: syntax only, nothing expanded. */
export interface Dockerfile {
  directives: Directive[];
  escapeToken: EscapeToken;
  /** The `# check=` directive, if any. */
  check: CheckConfig | null;
  /** ARG instructions before the first FROM. */
  globalArgs: ArgInstruction[];
  stages: Stage[];
  /** BuildKit lint findings that do not stop the build (skipped rules already removed). */
  warnings: Diagnostic[];
}
