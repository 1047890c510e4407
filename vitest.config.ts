import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Most sandbox tests wait on pods and child processes; two workers keep a 2-core CI run short.
    maxWorkers: 2,
    disableConsoleIntercept: true,
  },
});
