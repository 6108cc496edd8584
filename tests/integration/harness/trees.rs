//! Commits made object by object, so that a test can push trees no working copy can hold:
//! entries named `..`, `.git` or `git~1`, names with a `/`, duplicate names, gitlinks, and
//! any byte string git allows. Trees are written raw (`git hash-object -t tree --literally`),
//! so nothing between the test and the server cleans them up.
//!
//! Also a small seeded generator of such trees ([`Rng`], [`Gen`]): the same seed makes the
//! same commits, so a failure reproduces from the seed it prints.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use super::{DevClone, TestEnv, assert_success};

/// What a tree entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File {
        content: Vec<u8>,
        exec: bool,
    },
    Link(Vec<u8>),
    Dir(Tree),
    /// A submodule entry (mode 160000) naming a commit the repository does not have.
    Gitlink([u8; 20]),
}

/// Entries in the order given; [`Objects::tree`] sorts them as git does.
pub type Tree = Vec<(Vec<u8>, Node)>;

pub fn file(content: &str) -> Node {
    Node::File {
        content: content.as_bytes().to_vec(),
        exec: false,
    }
}

pub fn dir(entries: Vec<(&[u8], Node)>) -> Node {
    Node::Dir(tree(entries))
}

pub fn tree(entries: Vec<(&[u8], Node)>) -> Tree {
    entries.into_iter().map(|(n, e)| (n.to_vec(), e)).collect()
}

/// Writes objects into a repository with `git --git-dir`.
pub struct Objects {
    git_dir: PathBuf,
    env: TestEnv,
    blobs: HashMap<Vec<u8>, [u8; 20]>,
    commits: usize,
}

impl Objects {
    /// Objects in a developer's clone, ready to be pushed from it.
    pub fn in_clone(clone: &DevClone) -> Objects {
        Objects {
            git_dir: clone.path.join(".git"),
            env: clone.env.clone(),
            blobs: HashMap::new(),
            commits: 0,
        }
    }

    /// Objects written straight into the server's repository, for trees `git push` itself
    /// cannot send (git's own tree reader stops at an empty name).
    pub fn in_server(server: &super::Server) -> Objects {
        Objects {
            git_dir: server.repo.clone(),
            env: server.env.clone(),
            blobs: HashMap::new(),
            commits: 0,
        }
    }

    fn git(&self, args: &[&str], input: &[u8]) -> String {
        let mut child = self
            .env
            .command("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("git {}", args.join(" ")));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn blob(&mut self, content: &[u8]) -> [u8; 20] {
        if let Some(id) = self.blobs.get(content) {
            return *id;
        }
        let id = from_hex(&self.git(&["hash-object", "-w", "--stdin"], content));
        self.blobs.insert(content.to_vec(), id);
        id
    }

    /// The tree exactly as given (no name is checked), its entries sorted the way git sorts
    /// them: byte order, a directory's name compared as if it ended in `/`.
    pub fn tree(&mut self, tree: &Tree) -> [u8; 20] {
        let mut entries: Vec<(Vec<u8>, &str, [u8; 20])> = tree
            .iter()
            .map(|(name, node)| {
                let (mode, id) = match node {
                    Node::File { content, exec } => {
                        (if *exec { "100755" } else { "100644" }, self.blob(content))
                    }
                    Node::Link(target) => ("120000", self.blob(target)),
                    Node::Dir(sub) => ("40000", self.tree(sub)),
                    Node::Gitlink(id) => ("160000", *id),
                };
                (name.clone(), mode, id)
            })
            .collect();
        let key = |(name, mode, _): &(Vec<u8>, &str, [u8; 20])| {
            let mut k = name.clone();
            if *mode == "40000" {
                k.push(b'/');
            }
            k
        };
        entries.sort_by_key(key);
        let entries: Vec<(&str, &[u8], [u8; 20])> = entries
            .iter()
            .map(|(name, mode, id)| (*mode, name.as_slice(), *id))
            .collect();
        self.raw_tree(&entries)
    }

    /// A tree of `(mode, name, id)` entries written byte for byte in the order given, modes
    /// no working copy makes (the `100664` of very old git) included.
    pub fn raw_tree(&mut self, entries: &[(&str, &[u8], [u8; 20])]) -> [u8; 20] {
        let mut raw = Vec::new();
        for (mode, name, id) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend_from_slice(id);
        }
        from_hex(&self.git(
            &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"],
            &raw,
        ))
    }

    /// A commit of `tree` without parents (pushed with force, it replaces whatever was there).
    pub fn commit(&mut self, tree: &Tree, message: &str) -> String {
        let id = self.tree(tree);
        self.commit_tree(&id, message)
    }

    /// A commit of the tree `id` without parents.
    pub fn commit_tree(&mut self, id: &[u8; 20], message: &str) -> String {
        let id = hex(id);
        self.commits += 1;
        // The counter keeps two commits of the same tree apart.
        let message = format!("{message} ({})", self.commits);
        self.git(&["commit-tree", &id], message.as_bytes())
    }
}

pub fn hex(id: &[u8; 20]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> [u8; 20] {
    let mut id = [0; 20];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .unwrap_or_else(|_| panic!("not an object id: {text:?}"));
    }
    id
}

/// xorshift64*: a few lines instead of a dependency, and the same sequence on every machine
/// and every version, which is what a printed seed needs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point; mix the seed so that small seeds differ at once.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Names git accepts and a deploy must keep exactly: odd bytes, not UTF-8, near-misses of the
/// names git refuses.
pub const ODD_NAMES: &[&[u8]] = &[
    b"index.php",
    b"a",
    b"b",
    b"src",
    b"lib",
    b"d\xff",
    b"\xfe\xfe",
    b"caf\xc3\xa9",
    b"sp ace",
    b"-dash",
    b"...",
    b".gitx",
    b"git~2",
    b"gi7eba~1",
    b"x\\y",
    b".hidden",
    b"\xe2\x80\x8cgit",
    b"tab\there",
    b"..\\x",
    b" .git",
    b".gi\xfft",
    b"GIT~1x",
    b".gitmodulesx",
];

/// One name git's fsck or verify_path refuses, as a kind the generator can place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// A chain of `..` directories climbing out of application/ to a canary.
    DotDot,
    Dot,
    /// An empty name: git's own tree reader refuses it, so it cannot be pushed; it reaches a
    /// repository by other means (and `replay`).
    Empty,
    /// `.git` in one of its spellings (case, NTFS, HFS+).
    DotGit,
    /// A name with a `/` in it.
    Slash,
    /// `.gitmodules` (or a spelling of it) as a symlink.
    GitmodulesLink,
    /// Two entries of the same name: a symlink to a canary and a directory under it.
    Duplicate,
}

pub const HOSTILE: &[Hostile] = &[
    Hostile::DotDot,
    Hostile::Dot,
    Hostile::Empty,
    Hostile::DotGit,
    Hostile::Slash,
    Hostile::GitmodulesLink,
    Hostile::Duplicate,
];

/// Spellings of `.git` that git refuses.
pub const DOT_GITS: &[&[u8]] = &[
    b".git",
    b".GIT",
    b".Git",
    b"git~1",
    b"GIT~1",
    b".git.",
    b".git ",
    b".git. . ",
    b".git::$INDEX_ALLOCATION",
    b".git\\hooks",
    b"x\\.git",
    b".g\xe2\x80\x8cit",
    b"\xef\xbb\xbf.git",
    b".git\xe2\x80\x8f",
];

/// The generator: random trees of odd but valid entries, changes of type between commits,
/// and, when asked, one hostile entry placed somewhere in them.
pub struct Gen {
    pub rng: Rng,
    /// What symlinks may point at: canaries outside the deploy root, absolute and relative.
    pub link_targets: Vec<Vec<u8>>,
    /// Names of the canaries next to the deploy root, for `..` chains to aim at.
    pub canary_names: Vec<Vec<u8>>,
}

impl Gen {
    /// A random tree of valid entries; its root always has an `index.php`.
    pub fn tree(&mut self) -> Tree {
        let mut t = self.entries(0);
        if !t.iter().any(|(n, _)| n == b"index.php") {
            t.retain(|(n, _)| n != b"index.php");
            t.push((b"index.php".to_vec(), file("<?php echo 'index';\n")));
        }
        t
    }

    fn entries(&mut self, depth: usize) -> Tree {
        let mut t: Tree = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            let name = self.rng.pick(ODD_NAMES).to_vec();
            if t.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let node = fit(&name, self.node(depth));
            t.push((name, node));
        }
        t
    }

    fn node(&mut self, depth: usize) -> Node {
        match self.rng.below(if depth < 3 { 10 } else { 7 }) {
            0..=2 => Node::File {
                content: format!("content {}\n", self.rng.next()).into_bytes(),
                exec: false,
            },
            3 => Node::File {
                content: b"#!/bin/sh\necho hi\n".to_vec(),
                exec: true,
            },
            4 | 5 => Node::Link(self.rng.pick(&self.link_targets).clone()),
            6 => Node::Gitlink(self.oid()),
            _ => {
                let mut entries = self.entries(depth + 1);
                if entries.is_empty() {
                    entries.push((b"a".to_vec(), file("a\n")));
                }
                Node::Dir(entries)
            }
        }
    }

    fn oid(&mut self) -> [u8; 20] {
        let mut id = [0; 20];
        for b in id.iter_mut() {
            *b = self.rng.next() as u8;
        }
        id
    }

    /// The next commit's tree: `tree` with some entries changed in type (file, directory,
    /// symlink, gitlink into one another), some removed, some added. Never `index.php`.
    pub fn mutate(&mut self, tree: &Tree, log: &mut Vec<String>) -> Tree {
        let mut t = tree.clone();
        for _ in 0..1 + self.rng.below(3) {
            self.mutate_once(&mut t, 0, &mut Vec::new(), log);
        }
        t
    }

    fn mutate_once(&mut self, t: &mut Tree, depth: usize, at: &mut Vec<u8>, log: &mut Vec<String>) {
        let candidates: Vec<usize> = (0..t.len())
            .filter(|&i| !(depth == 0 && t[i].0 == b"index.php"))
            .collect();
        if candidates.is_empty() || self.rng.chance(20) {
            let name = self.rng.pick(ODD_NAMES).to_vec();
            if !t.iter().any(|(n, _)| *n == name) {
                let node = fit(&name, self.node(depth));
                log.push(format!("add {} as {}", show(at, &name), kind(&node)));
                t.push((name, node));
            }
            return;
        }
        let i = *self.rng.pick(&candidates);
        let name = t[i].0.clone();
        if let Node::Dir(sub) = &mut t[i].1
            && self.rng.chance(50)
        {
            at.extend_from_slice(&name);
            at.push(b'/');
            self.mutate_once(sub, depth + 1, at, log);
            return;
        }
        if self.rng.chance(20) {
            log.push(format!("remove {}", show(at, &name)));
            t.remove(i);
            return;
        }
        let was = kind(&t[i].1);
        let mut node = self.node(depth);
        for _ in 0..4 {
            if kind(&node) != was {
                break;
            }
            node = self.node(depth);
        }
        let node = fit(&name, node);
        log.push(format!(
            "retype {} from {was} to {}",
            show(at, &name),
            kind(&node)
        ));
        t[i].1 = node;
    }

    /// `tree` with one hostile entry of kind `what` put in a random directory of it (created
    /// when needed). Returns the tree and the path a refusal must name: everything up to and
    /// including the first name git refuses.
    pub fn inject(&mut self, tree: &Tree, what: Hostile) -> (Tree, Vec<u8>) {
        let mut t = tree.clone();
        // Where: mostly a directory the tree has already (a `..` climbs out only through
        // directories that exist on the server), else one or two new levels.
        let existing = dirs(&t);
        let at: Vec<Vec<u8>> = if !existing.is_empty() && self.rng.chance(60) {
            self.rng.pick(&existing).clone()
        } else {
            (0..self.rng.below(3))
                .map(|_| self.rng.pick(&[&b"public"[..], b"src", b"d\xff"]).to_vec())
                .collect()
        };
        let (name, node, refused): (Vec<u8>, Node, Vec<u8>) = match what {
            Hostile::DotDot => {
                // Enough `..` to leave application/: one more reaches the deploy root, two
                // the canaries next to it.
                let ups = at.len() + 1 + self.rng.below(2);
                let target = if ups == at.len() + 1 {
                    self.rng
                        .pick(&[&b"latest"[..], b"shared", b"builds", b".atomdeploy"])
                        .to_vec()
                } else {
                    self.rng.pick(&self.canary_names).clone()
                };
                let leaf = match self.rng.below(3) {
                    0 => file("overwritten\n"),
                    1 => Node::Link(self.rng.pick(&self.link_targets).clone()),
                    _ => dir(vec![(b"y", file("through a link\n"))]),
                };
                let mut node = dir(vec![(&target[..], leaf)]);
                for _ in 1..ups {
                    node = Node::Dir(vec![(b"..".to_vec(), node)]);
                }
                (b"..".to_vec(), node, b"..".to_vec())
            }
            Hostile::Dot => (
                b".".to_vec(),
                dir(vec![(b"index.php", file("dot\n"))]),
                b".".to_vec(),
            ),
            // libgit2 cannot read the directory that holds it: the refusal names that.
            Hostile::Empty => (Vec::new(), file("empty name\n"), b"/".to_vec()),
            Hostile::DotGit => {
                let name = self.rng.pick(DOT_GITS).to_vec();
                let node = if self.rng.chance(50) {
                    dir(vec![
                        (b"config", file("[core]\n\tworktree = /\n")),
                        (
                            b"hooks",
                            dir(vec![(
                                b"post-checkout",
                                file("#!/bin/sh\ntouch /tmp/pwned\n"),
                            )]),
                        ),
                    ])
                } else {
                    file("gitdir: /\n")
                };
                (name.clone(), node, name)
            }
            Hostile::Slash => {
                let name = self
                    .rng
                    .pick(&[&b"a/b"[..], b"../escape", b"/abs", b"x/"])
                    .to_vec();
                (name.clone(), file("slash\n"), name)
            }
            Hostile::GitmodulesLink => {
                let name = self
                    .rng
                    .pick(&[
                        &b".gitmodules"[..],
                        b".GITMODULES",
                        b".gitmodules .",
                        b"gi7eba~1",
                    ])
                    .to_vec();
                let target = self.rng.pick(&self.link_targets).clone();
                (name.clone(), Node::Link(target), name)
            }
            Hostile::Duplicate => {
                let target = self.rng.pick(&self.link_targets).clone();
                let name = b"twice".to_vec();
                // The link goes in here; the directory of the same name below.
                let here = descend(&mut t, &at);
                here.retain(|(n, _)| *n != name);
                here.push((name.clone(), Node::Link(target)));
                here.push((name.clone(), dir(vec![(b"y", file("through a link\n"))])));
                let mut refused = at.join(&b'/');
                if !refused.is_empty() {
                    refused.push(b'/');
                }
                refused.extend_from_slice(&name);
                return (t, refused);
            }
        };
        let here = descend(&mut t, &at);
        here.retain(|(n, _)| *n != name);
        here.push((name, node));
        let mut path = at.join(&b'/');
        if !path.is_empty() && refused != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(&refused);
        (t, path)
    }
}

/// `gi7eba~1` is what `.gitmodules` is called on NTFS: git refuses it as a symlink only.
fn fit(name: &[u8], node: Node) -> Node {
    match node {
        Node::Link(target) if name == b"gi7eba~1" => Node::File {
            content: target,
            exec: false,
        },
        other => other,
    }
}

/// The path of every directory of `tree`, the root's as an empty path.
pub fn dirs(tree: &Tree) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new()];
    for (name, node) in tree {
        if let Node::Dir(sub) = node {
            for mut path in dirs(sub) {
                path.insert(0, name.clone());
                out.push(path);
            }
        }
    }
    out
}

/// The directory at `path` in `tree`, made (replacing whatever was there) when missing.
fn descend<'a>(tree: &'a mut Tree, path: &[Vec<u8>]) -> &'a mut Tree {
    let Some((first, rest)) = path.split_first() else {
        return tree;
    };
    let i = match tree.iter().position(|(n, _)| n == first) {
        Some(i) => {
            if !matches!(tree[i].1, Node::Dir(_)) {
                tree[i].1 = Node::Dir(vec![(b"a".to_vec(), file("a\n"))]);
            }
            i
        }
        None => {
            tree.push((first.clone(), Node::Dir(vec![(b"a".to_vec(), file("a\n"))])));
            tree.len() - 1
        }
    };
    match &mut tree[i].1 {
        Node::Dir(sub) => descend(sub, rest),
        _ => unreachable!(),
    }
}

pub fn kind(node: &Node) -> &'static str {
    match node {
        Node::File { exec: false, .. } => "file",
        Node::File { exec: true, .. } => "executable",
        Node::Link(_) => "symlink",
        Node::Dir(_) => "directory",
        Node::Gitlink(_) => "gitlink",
    }
}

fn show(at: &[u8], name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&[at, name].concat()))
}

/// Every path of `tree` that is a file, symlink or gitlink, with the node there.
pub fn leaves(tree: &Tree) -> Vec<(Vec<u8>, Node)> {
    let mut out = Vec::new();
    fn go(t: &Tree, prefix: &[u8], out: &mut Vec<(Vec<u8>, Node)>) {
        for (name, node) in t {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            match node {
                Node::Dir(sub) => go(sub, &path, out),
                other => out.push((path, other.clone())),
            }
        }
    }
    go(tree, b"", &mut out);
    out
}
