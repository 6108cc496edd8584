<?php
// php mutate.php DIR KIND ROUND LIB SRC TEMPLATES
// Makes the changes of one push of KIND in the app at DIR (the developer's clone):
//   content  10 templates changed
//   code     10 classes under src/ changed and one new class added
//   lock     the package's version bumped and one of its classes changed; the caller then runs
//            `composer update atomdeploy/lib` to rewrite composer.lock
// ROUND (1, 2, ...) picks which files, so every push is a new commit. Prints what a deployed
// build must then contain, one check a line:
//   same APP_PATH BUILD_PATH   the build's BUILD_PATH equals the clone's APP_PATH
//   class FQCN                 composer's optimized class map lists FQCN

declare(strict_types=1);

require __DIR__ . '/app.php';

if ($argc !== 7) {
    fwrite(STDERR, "usage: php mutate.php DIR KIND ROUND LIB SRC TEMPLATES\n");
    exit(2);
}
[, $dir, $kind, $round, $lib, $src, $templates] = $argv;
[$round, $lib, $src, $templates] = [(int) $round, (int) $lib, (int) $src, (int) $templates];
chdir($dir);

/** @return list<int> up to 10 distinct indices below $count, different from round to round */
function pick(int $count, int $round): array
{
    $step = max(1, intdiv($count, 10));
    $picked = [];
    for ($k = 0; $k < min(10, $count); $k++) {
        $picked[] = ($round * 7 + $k * $step) % $count;
    }
    return array_values(array_unique($picked));
}

function set_rev(string $path, string $rev): void
{
    $text = file_get_contents($path);
    $new = preg_replace("/public const REV = '[^']*';/", "public const REV = '$rev';", $text, 1, $n);
    if ($n !== 1) {
        throw new RuntimeException("no REV constant in $path");
    }
    write_file($path, $new);
}

switch ($kind) {
    case 'content':
        foreach (pick($templates, $round) as $i) {
            $path = template_path($i);
            write_file($path, file_get_contents($path) . "{# edited for push $round #}\n");
            echo "same $path $path\n";
        }
        break;

    case 'code':
        foreach (pick($src, $round) as $i) {
            set_rev(class_path($i), "r$round");
            echo 'same ' . class_path($i) . ' ' . class_path($i) . "\n";
        }
        $name = sprintf('Feature%04d', $round);
        $path = "src/Added/$name.php";
        write_file($path, <<<PHP
<?php

declare(strict_types=1);

namespace App\\Added;

/** A class added by push $round of the benchmark. */
final class $name
{
    public function __invoke(): string
    {
        return '$name';
    }
}

PHP);
        echo "same $path $path\n";
        echo "class App\\Added\\$name\n";
        break;

    case 'lock':
        $json = json_decode(file_get_contents('packages/lib/composer.json'), true, 512, JSON_THROW_ON_ERROR);
        $json['version'] = "1.0.$round";
        write_file('packages/lib/composer.json', json_out($json));
        $i = ($round * 13) % $lib;
        set_rev('packages/lib/' . lib_path($i), "r$round");
        echo 'same packages/lib/' . lib_path($i) . ' vendor/atomdeploy/lib/' . lib_path($i) . "\n";
        echo "same packages/lib/composer.json vendor/atomdeploy/lib/composer.json\n";
        echo 'class ' . lib_fqcn($i) . "\n";
        break;

    default:
        fwrite(STDERR, "unknown kind $kind (content, code, lock)\n");
        exit(2);
}
