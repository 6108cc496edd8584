<?php
// php grouptimes.php PRIMARY_DEPLOYS_JSONL HOST_DEPLOYS_JSONL...
// Where one group deploy's time went, from the deploy logs of the primary and its hosts; prints,
// tab-separated, in milliseconds:
//   primary  the primary's own prepare: its steps before the switch (checkout … shared)
//   reach    the latest host's hook start after the primary's hook started: ssh's connection,
//            git's transfer and the host's start, all of it waiting on the network or the CPU
//   prepare  the longest host prepare (its hook's own time: checkout, composer, snapshot …)
// "-" for each when the logs do not hold a group deploy's entries.

declare(strict_types=1);

[, $primaryLog] = $argv + [null, ''];
$hostLogs = array_slice($argv, 2);

require __DIR__ . '/deploys.php';

$primary = last_entry($primaryLog, fn (array $e) => ($e['outcome'] ?? '') === 'deployed');
$gid = $primary === null ? null : last_entry(
    $hostLogs[0] ?? '/dev/null',
    fn (array $e) => ($e['group']['op'] ?? '') === 'switch',
)['group']['gid'] ?? null;
$preps = $gid === null ? [] : array_map(
    fn (string $log) => last_entry($log, fn (array $e) => ($e['group']['gid'] ?? '') === $gid
        && in_array($e['group']['op'] ?? '', ['prepare', 'replay'], true)),
    $hostLogs,
);
if ($primary === null || $preps === [] || in_array(null, $preps, true)) {
    echo "-\t-\t-\n";
    exit(0);
}
$own = 0.0;
foreach ($primary['steps'] as $step) {
    if ($step['step'] === 'switch') {
        break;
    }
    $own += $step['seconds'];
}
$start = epoch($primary['started_at']);
$reach = max(array_map(fn (array $e) => epoch($e['started_at']) - $start, $preps));
$prepare = max(array_map(fn (array $e) => (float) $e['seconds'], $preps));
printf("%.1f\t%.1f\t%.1f\n", 1000 * $own, 1000 * $reach, 1000 * $prepare);
