//! The deploy files against the code: the Dockerfile's build stage copies
//! every path the build reads (files embedded with `include_str!`,
//! migrations, workspace members' manifests), so an image build cannot fail
//! on a missing file the way it once did for `openapi/`.

use std::path::{Component, Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The sources of the build stage's `COPY` lines (up to the next `FROM`),
/// relative to the repository root (the compose build context).
fn copied() -> Vec<PathBuf> {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    let mut copied = Vec::new();
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages += 1;
            if stages > 1 {
                break;
            }
        }
        if let Some(args) = line.strip_prefix("COPY ")
            && !args.starts_with("--from")
        {
            let words: Vec<&str> = args.split_whitespace().collect();
            copied.extend(words[..words.len() - 1].iter().map(PathBuf::from));
        }
    }
    copied
}

/// `path` without `.` and `..` (lexically).
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every path the build reads besides `src/`, relative to the root.
fn read_by_the_build() -> Vec<PathBuf> {
    let mut read = vec![PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock")];
    if Path::new(ROOT).join("build.rs").exists() {
        read.push(PathBuf::from("build.rs"));
    }
    let mut files = vec![PathBuf::from("src")];
    while let Some(path) = files.pop() {
        let full = Path::new(ROOT).join(&path);
        if full.is_dir() {
            for entry in std::fs::read_dir(&full).unwrap() {
                files.push(path.join(entry.unwrap().file_name()));
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&full).unwrap();
        for (macro_name, relative_to_file) in [
            ("include_str!(\"", true),
            ("include_bytes!(\"", true),
            ("migrate!(\"", false),
        ] {
            let mut rest = text.as_str();
            while let Some(at) = rest.find(macro_name) {
                rest = &rest[at + macro_name.len()..];
                let arg = &rest[..rest.find('"').unwrap()];
                read.push(if relative_to_file {
                    normal(&path.parent().unwrap().join(arg))
                } else {
                    PathBuf::from(arg)
                });
            }
        }
    }
    read.extend(
        workspace_members()
            .into_iter()
            .filter(|m| m != ".")
            .map(PathBuf::from),
    );
    read
}

/// The `[workspace] members` of the root manifest (cargo reads every
/// member's manifest even to build one package), read without a TOML
/// parser: the list is one array.
fn workspace_members() -> Vec<String> {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let Some(at) = manifest.find("\nmembers") else {
        return vec![];
    };
    let list = &manifest[at..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn the_dockerfile_copies_every_path_the_build_reads() {
    let copied = copied();
    assert!(copied.contains(&PathBuf::from("src")), "{copied:?}");
    let missing: Vec<_> = read_by_the_build()
        .into_iter()
        .filter(|read| !copied.iter().any(|c| read.starts_with(c)))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/Dockerfile's build stage does not copy {missing:?} (it copies {copied:?})"
    );
}
