/**
 * PostgreSQL COPY text format (the table data inside a dump): one row per line, columns separated by tabs, `\N` for
 * NULL, backslash escapes, and a `\.` line at the end. Parsed as a stream, one line at a time.
 */
import type { Readable } from 'node:stream';

/** Column names from a COPY statement: `COPY public.users (name, password_hash, …) FROM stdin;`. */
export function copyColumns(copyStmt: string): string[] {
  const match = /^COPY\s+\S+\s*\(([^)]*)\)\s+FROM\s+stdin/i.exec(copyStmt.trim());
  if (!match) return [];
  return (match[1] as string).split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
}

const SIMPLE_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };

/** Decodes one COPY text field; null for `\N`. */
export function decodeCopyField(raw: string): string | null {
  if (raw === '\\N') return null;
  if (!raw.includes('\\')) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string;
    if (ch !== '\\' || i === raw.length - 1) {
      out += ch;
      continue;
    }
    const next = raw[i + 1] as string;
    if (next in SIMPLE_ESCAPES) {
      out += SIMPLE_ESCAPES[next];
      i++;
    } else if (/[0-7]/.test(next)) {
      const oct = /^[0-7]{1,3}/.exec(raw.slice(i + 1))?.[0] as string;
      out += String.fromCharCode(Number.parseInt(oct, 8));
      i += oct.length;
    } else if (next === 'x' && /^[0-9a-fA-F]/.test(raw[i + 2] ?? '')) {
      const hex = /^[0-9a-fA-F]{1,2}/.exec(raw.slice(i + 2))?.[0] as string;
      out += String.fromCharCode(Number.parseInt(hex, 16));
      i += 1 + hex.length;
    } else {
      out += next;
      i++;
    }
  }
  return out;
}

/**
 * Yields the rows of a COPY text stream as arrays of decoded fields, stopping at the `\.` end marker. Memory is
 * bounded by the longest line.
 */
export async function* copyRows(stream: Readable): AsyncGenerator<(string | null)[]> {
  let rest = '';
  const decoder = new TextDecoder('utf-8');
  const parse = (line: string) => line.split('\t').map(decodeCopyField);
  try {
    for await (const chunk of stream) {
      const text = rest + (typeof chunk === 'string' ? chunk : decoder.decode(chunk as Buffer, { stream: true }));
      let from = 0;
      let nl = text.indexOf('\n');
      while (nl >= 0) {
        const line = text.slice(from, nl);
        if (line === '\\.') return;
        yield parse(line);
        from = nl + 1;
        nl = text.indexOf('\n', from);
      }
      rest = text.slice(from);
    }
    rest += decoder.decode();
    if (rest.length > 0 && rest !== '\\.') yield parse(rest);
  } finally {
    stream.destroy();
  }
}
