//! `docs/guide.md` shows the example's own code: each ```rust block follows
//! a `<!-- from examples/inventory/… -->` line and is a word-for-word excerpt
//! of that file (parts split at `// …` lines, in order). So it compiles.

#[test]
fn the_guide_quotes_the_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let guide = std::fs::read_to_string(format!("{root}/docs/guide.md")).unwrap();
    let (mut lines, mut from, mut blocks) = (guide.lines(), None, 0);
    while let Some(line) = lines.next() {
        if let Some(path) = line.strip_prefix("<!-- from ").and_then(|rest| rest.strip_suffix(" -->")) {
            from = Some(path);
        } else if line.starts_with("```rust") {
            let path = from.take().expect("a ```rust block with no `<!-- from … -->` line before it");
            let file = std::fs::read_to_string(format!("{root}/{path}")).unwrap();
            let block: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
            let mut at = 0;
            for part in block.split(|line| line.trim() == "// …").map(|part| part.join("\n")) {
                let found = file[at..].find(&part).unwrap_or_else(|| panic!("not in {path} (in order):\n{part}"));
                at += found + part.len();
            }
            blocks += 1;
        }
    }
    assert!(blocks >= 10, "only {blocks} excerpts found");
}

/// The README gives the example's length, as `find examples/inventory -name '*.rs' | xargs cat | wc -l` counts it.
#[test]
fn the_readme_gives_the_line_count() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut lines = 0;
    for dir in ["src", "tests"] {
        for file in std::fs::read_dir(format!("{root}/examples/inventory/{dir}")).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "rs") {
                lines += std::fs::read_to_string(path).unwrap().lines().count();
            }
        }
    }
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(readme.contains(&format!("{lines} lines of Rust")), "README.md should say {lines} lines of Rust");
}
