/**
 * What a Synapse dump says about itself: server name (from `users`), schema version, applied deltas, row counts of
 * the few tables the import checks afterwards. Read from the custom-format archive directly, streaming only the
 * small tables' data (never the whole dump).
 */
import { copyColumns, copyRows } from './copy-text.js';
import {
  type DumpHeader,
  type DumpToc,
  type FileRange,
  findTable,
  findTableData,
  openTableData,
  type TocEntry,
} from './pgdump.js';

/** The table whose rows must never be restored (see synapse-database.md §6). */
export const ONE_TIME_KEYS_TABLE = 'e2e_one_time_keys_json';

export interface SchemaFacts {
  version: number;
  upgraded: boolean;
  compatVersion?: number;
  /** `applied_schema_deltas` rows, as "version/file" (e.g. "94/03_quarantined_media_tracking_seq.sql"). */
  appliedDeltas: string[];
}

export interface UserFacts {
  total: number;
  /** Server names (the part of `users.name` after the first ':') with their user counts, most users first. */
  domains: { domain: string; users: number }[];
  /** Active, non-guest, non-appservice users with a password hash: they log in with Synapse's own passwords. */
  withPassword: number;
  deactivated: number;
  guests: number;
  appservice: number;
}

export interface DumpFacts {
  header: DumpHeader;
  sizeBytes: number;
  tocEntries: number;
  tables: string[];
  sequences: string[];
  functions: string[];
  /** undefined when the dump has no `users` table (not a Synapse database). */
  users?: UserFacts;
  rooms?: number;
  /** undefined when the dump has no `schema_version` table. */
  schema?: SchemaFacts;
  /** The dump holds rows of e2e_one_time_keys_json (they will be left out). */
  oneTimeKeyData: boolean;
}

function column(entry: TocEntry, name: string): number {
  return copyColumns(entry.copyStmt).indexOf(name);
}

async function* rowsOf(range: FileRange, toc: DumpToc, table: string) {
  const entry = findTableData(toc, table);
  if (!entry) return;
  yield* copyRows(openTableData(range, toc, entry));
}

function truthy(value: string | null | undefined): boolean {
  return value === 't' || value === 'true' || value === '1';
}

/** Reads the users table's data: counts and server names. */
async function userFacts(range: FileRange, toc: DumpToc): Promise<UserFacts | undefined> {
  if (!findTable(toc, 'users')) return undefined;
  const entry = findTableData(toc, 'users');
  const facts: UserFacts = { total: 0, domains: [], withPassword: 0, deactivated: 0, guests: 0, appservice: 0 };
  if (!entry) return facts;
  const idx = {
    name: column(entry, 'name'),
    password: column(entry, 'password_hash'),
    guest: column(entry, 'is_guest'),
    deactivated: column(entry, 'deactivated'),
    appservice: column(entry, 'appservice_id'),
  };
  const domains = new Map<string, number>();
  for await (const row of rowsOf(range, toc, 'users')) {
    facts.total++;
    const name = row[idx.name] ?? '';
    const colon = name.indexOf(':');
    const domain = colon >= 0 ? name.slice(colon + 1) : '';
    domains.set(domain, (domains.get(domain) ?? 0) + 1);
    const guest = idx.guest >= 0 && truthy(row[idx.guest]);
    const deactivated = idx.deactivated >= 0 && (row[idx.deactivated] ?? '0') !== '0';
    const appservice = idx.appservice >= 0 && row[idx.appservice] !== null && row[idx.appservice] !== undefined;
    if (guest) facts.guests++;
    if (deactivated) facts.deactivated++;
    if (appservice) facts.appservice++;
    if (!guest && !deactivated && !appservice && idx.password >= 0 && row[idx.password]) facts.withPassword++;
  }
  facts.domains = [...domains.entries()]
    .map(([domain, users]) => ({ domain, users }))
    .sort((a, b) => b.users - a.users || a.domain.localeCompare(b.domain));
  return facts;
}

async function countRows(range: FileRange, toc: DumpToc, table: string): Promise<number | undefined> {
  if (!findTable(toc, table)) return undefined;
  let n = 0;
  for await (const _row of rowsOf(range, toc, table)) n++;
  return n;
}

async function schemaFacts(range: FileRange, toc: DumpToc): Promise<SchemaFacts | undefined> {
  if (!findTable(toc, 'schema_version')) return undefined;
  const facts: SchemaFacts = { version: 0, upgraded: false, appliedDeltas: [] };
  const versionEntry = findTableData(toc, 'schema_version');
  let found = false;
  if (versionEntry) {
    const v = column(versionEntry, 'version');
    const u = column(versionEntry, 'upgraded');
    for await (const row of rowsOf(range, toc, 'schema_version')) {
      facts.version = Number(row[v]);
      facts.upgraded = truthy(row[u]);
      found = true;
    }
  }
  if (!found) return undefined;
  const compatEntry = findTableData(toc, 'schema_compat_version');
  if (compatEntry) {
    const c = column(compatEntry, 'compat_version');
    for await (const row of rowsOf(range, toc, 'schema_compat_version')) facts.compatVersion = Number(row[c]);
  }
  const deltasEntry = findTableData(toc, 'applied_schema_deltas');
  if (deltasEntry) {
    const v = column(deltasEntry, 'version');
    const f = column(deltasEntry, 'file');
    for await (const row of rowsOf(range, toc, 'applied_schema_deltas'))
      facts.appliedDeltas.push(`${row[v]}/${row[f]}`);
  }
  facts.appliedDeltas.sort();
  return facts;
}

/** Collects the {@link DumpFacts} of a Synapse dump. */
export async function readDumpFacts(range: FileRange, toc: DumpToc): Promise<DumpFacts> {
  const names = (desc: string) =>
    toc.entries
      .filter((e) => e.desc === desc && e.namespace === 'public')
      .map((e) => e.tag)
      .sort();
  const [users, rooms, schema] = [
    await userFacts(range, toc),
    await countRows(range, toc, 'rooms'),
    await schemaFacts(range, toc),
  ];
  const otk = findTableData(toc, ONE_TIME_KEYS_TABLE);
  return {
    header: toc.header,
    sizeBytes: range.length,
    tocEntries: toc.entries.length,
    tables: names('TABLE'),
    sequences: names('SEQUENCE'),
    functions: names('FUNCTION'),
    users,
    rooms,
    schema,
    oneTimeKeyData: otk !== undefined,
  };
}
