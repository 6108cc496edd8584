<?php
// Reading atomdeploy's deploy log (`.atomdeploy/deploys.jsonl`), shared by deploylog.php and
// grouptimes.php.

declare(strict_types=1);

/** An RFC 3339 UTC time as the log writes it, in epoch seconds. */
function epoch(string $rfc3339): float
{
    if (!preg_match('/^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/', $rfc3339, $m)) {
        throw new RuntimeException("not an RFC 3339 UTC time: $rfc3339");
    }
    $whole = (new DateTimeImmutable($m[1], new DateTimeZone('UTC')))->getTimestamp();
    return $whole + (isset($m[2]) ? (float) ('0.' . $m[2]) : 0.0);
}

/** The last entry of the deploy log `$log` that `$is` accepts, or null. */
function last_entry(string $log, callable $is): ?array
{
    $found = null;
    foreach (file($log, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: [] as $line) {
        $e = json_decode($line, true);
        if (is_array($e) && $is($e)) {
            $found = $e;
        }
    }
    return $found;
}
