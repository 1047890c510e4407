// `ess --help` warm wall time against `node -e 0` (target: at most 5×), both measured in this run.
import { join } from 'node:path';
import { median, repoRoot, report, timeCommand } from './lib.js';

const RUNS = 15;

async function measure(argv: string[]): Promise<number> {
  await timeCommand(argv); // warm-up (page cache, compile cache)
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = await timeCommand(argv);
    if (t.code !== 0) throw new Error(`${argv.join(' ')} exited ${t.code}: ${t.stderr}`);
    times.push(t.ms);
  }
  return median(times);
}

const node = process.execPath;
const baseline = await measure([node, '-e', '0']);
const help = await measure([node, join(repoRoot, 'bin', 'run.js'), '--help']);
const statusHelp = await measure([node, join(repoRoot, 'bin', 'run.js'), 'status', '--help']);
report(
  'help',
  [
    { what: 'node -e 0 (baseline)', medianMs: Math.round(baseline), ratio: 1 },
    { what: 'ess --help', medianMs: Math.round(help), ratio: Number((help / baseline).toFixed(2)) },
    { what: 'ess status --help', medianMs: Math.round(statusHelp), ratio: Number((statusHelp / baseline).toFixed(2)) },
  ],
  { runs: RUNS, target: 'ess --help ≤ 5× node -e 0' },
);
