<?php
// Layout of the generated benchmark app, shared by genapp.php and mutate.php.
//
// An app of N files (counted in the commit, the package included) has:
//   composer.json, composer.lock, .gitignore, public/index.php,
//   packages/lib/composer.json                         5 fixed files
//   packages/lib/src/PartNNN/SubN/ComponentNNNNN.php   P package classes (mirrored into vendor/)
//   src/ModuleNNN/SubN/ServiceNNNNN.php                S app classes (PSR-4, App\)
//   templates/sectionNNN/pageNNNNN.html.twig           T templates
// P follows 1,000 -> 300, 14,000 -> 4,000, 50,000 -> 12,000 (linear in between, and beyond);
// of the rest, 60 % are classes and 40 % templates.

declare(strict_types=1);

const FIXED_FILES = 5;
const PER_DIR = 25;      // files per leaf directory
const SUBS = 10;         // leaf directories per module / part / section group

function app_counts(int $n): array
{
    if ($n <= 1000) {
        $p = intdiv($n * 3, 10);
    } elseif ($n <= 14000) {
        $p = 300 + intdiv(($n - 1000) * 3700, 13000);
    } else {
        $p = 4000 + intdiv(($n - 14000) * 8000, 36000);
    }
    $rest = $n - FIXED_FILES - $p;
    if ($rest < 40) {
        fwrite(STDERR, "app size $n is too small (at least " . (FIXED_FILES + 60) . " files)\n");
        exit(2);
    }
    $s = intdiv($rest * 6, 10);
    return ['lib' => $p, 'src' => $s, 'templates' => $rest - $s];
}

function class_ns(int $i): string
{
    return sprintf('Module%03d\\Sub%d', intdiv($i, PER_DIR * SUBS), intdiv($i, PER_DIR) % SUBS);
}

function class_name(int $i): string
{
    return sprintf('Service%05d', $i);
}

function class_path(int $i): string
{
    return 'src/' . str_replace('\\', '/', class_ns($i)) . '/' . class_name($i) . '.php';
}

function class_fqcn(int $i): string
{
    return 'App\\' . class_ns($i) . '\\' . class_name($i);
}

function lib_ns(int $i): string
{
    return sprintf('Part%03d\\Sub%d', intdiv($i, PER_DIR * SUBS), intdiv($i, PER_DIR) % SUBS);
}

function lib_name(int $i): string
{
    return sprintf('Component%05d', $i);
}

/** Path inside the package (prefix packages/lib/ in the app, vendor/atomdeploy/lib/ once installed). */
function lib_path(int $i): string
{
    return 'src/' . str_replace('\\', '/', lib_ns($i)) . '/' . lib_name($i) . '.php';
}

function lib_fqcn(int $i): string
{
    return 'Atomdeploy\\Lib\\' . lib_ns($i) . '\\' . lib_name($i);
}

function template_path(int $i): string
{
    return sprintf('templates/section%03d/page%05d.html.twig', intdiv($i, 50), $i);
}

function write_file(string $path, string $content): void
{
    $dir = dirname($path);
    if (!is_dir($dir) && !mkdir($dir, 0777, true) && !is_dir($dir)) {
        throw new RuntimeException("cannot create $dir");
    }
    if (file_put_contents($path, $content) === false) {
        throw new RuntimeException("cannot write $path");
    }
}

function json_out(array $data): string
{
    return json_encode($data, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n";
}

function app_class_source(int $i, int $lib, string $rev): string
{
    $ns = 'App\\' . class_ns($i);
    $name = class_name($i);
    $dep = lib_fqcn($i % $lib);
    return <<<PHP
<?php

declare(strict_types=1);

namespace $ns;

use $dep as Dependency;

/**
 * $name of the generated benchmark app.
 */
final class $name
{
    public const REV = '$rev';

    /** @var array<string, mixed> */
    private array \$items = [];

    public function __construct(private readonly string \$name = 'service-$i')
    {
    }

    public function name(): string
    {
        return \$this->name;
    }

    public function add(string \$key, mixed \$value): self
    {
        \$this->items[\$key] = \$value;

        return \$this;
    }

    public function describe(): string
    {
        return sprintf('%s@%s with %d items', self::class, self::REV, count(\$this->items));
    }

    public function dependency(): string
    {
        return Dependency::class;
    }
}

PHP;
}

function lib_class_source(int $i, string $rev): string
{
    $ns = 'Atomdeploy\\Lib\\' . lib_ns($i);
    $name = lib_name($i);
    return <<<PHP
<?php

declare(strict_types=1);

namespace $ns;

/**
 * $name of the benchmark's path-repository package.
 */
class $name
{
    public const REV = '$rev';

    /** @param list<string> \$parts */
    public function __construct(private array \$parts = ['component', '$i'])
    {
    }

    public function join(string \$glue = '-'): string
    {
        return implode(\$glue, \$this->parts);
    }

    public function with(string \$part): static
    {
        \$copy = clone \$this;
        \$copy->parts[] = \$part;

        return \$copy;
    }

    public function describe(): string
    {
        return sprintf('%s@%s: %s', static::class, static::REV, \$this->join());
    }
}

PHP;
}

function template_source(int $i): string
{
    $section = intdiv($i, 50);
    return <<<TWIG
{% extends "layout.html.twig" %}

{% block title %}Page $i of section $section{% endblock %}

{% block content %}
  <article class="page page-$i">
    <h1>{{ page.title|default('Page $i') }}</h1>
    <p class="lead">{{ page.summary }}</p>
    {% for item in page.items %}
      <section id="item-{{ loop.index }}">
        <h2>{{ item.title }}</h2>
        <div>{{ item.body|raw }}</div>
        <a href="{{ path('item_show', {id: item.id}) }}">Read more</a>
      </section>
    {% else %}
      <p>Nothing here yet.</p>
    {% endfor %}
  </article>
{% endblock %}

TWIG;
}
