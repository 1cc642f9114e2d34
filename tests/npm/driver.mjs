// Drives the stock @actions/cache client for kiln's integration tests.
// Usage: node driver.mjs save KEY | node driver.mjs restore KEY [RESTORE_KEY...]
// Paths come from CACHE_PATHS (newline-separated); the ACTIONS_* and GITHUB_* variables
// select the API exactly as in a real job. Prints one line: KILN_RESULT <json>.
import * as cache from '@actions/cache';

const [command, key, ...restoreKeys] = process.argv.slice(2);
const paths = (process.env.CACHE_PATHS || 'data').split('\n').filter((p) => p.length > 0);

try {
  let result;
  if (command === 'save') {
    result = { cacheId: await cache.saveCache(paths, key) };
  } else if (command === 'restore') {
    const matched = await cache.restoreCache(paths, key, restoreKeys);
    result = { matchedKey: matched ?? null };
  } else {
    throw new Error(`unknown command ${command}`);
  }
  console.log(`KILN_RESULT ${JSON.stringify(result)}`);
} catch (error) {
  console.log(`KILN_RESULT ${JSON.stringify({ error: String(error) })}`);
  process.exitCode = 1;
}
