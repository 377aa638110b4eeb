//! What a user reads agrees with the code: the defaults `train-head --help` states are the
//! library's; every flag of every command's `--help` is described in the README, and every flag the
//! README writes after `headstart <command>` exists; the defaults the README states are the help's.

use super::*;

/// The help text of one flag: from its line to the next flag's.
pub(crate) fn flag_help(help: &str, flag: &str) -> String {
    let mut lines = help.lines().skip_while(|l| {
        let l = l.trim_start();
        !(l.starts_with(&format!("{flag} ")) || l == flag || l.starts_with(&format!("{flag},")))
    });
    let Some(first) = lines.next() else {
        panic!("{flag} is not in the help:\n{help}");
    };
    let mut text = first.to_string();
    for l in lines {
        let t = l.trim_start();
        if t.starts_with("--") || (t.starts_with('-') && t.len() > 1 && !t.starts_with("- ")) {
            break;
        }
        text.push('\n');
        text.push_str(l);
    }
    text
}

#[test]
fn train_head_help_states_the_library_defaults() {
    use headstart::head::fit::TrainConfig;
    use headstart::head::net::DEFAULT_HEAD;
    use headstart::head::settings::*;
    let help = ok(&["train-head", "--help"]);
    let d = TrainConfig::default();
    let want = [
        ("--head", DEFAULT_HEAD.to_string()),
        ("--epochs", d.epochs.to_string()),
        ("--batch-size", d.batch_size.to_string()),
        ("--seed", d.seed.to_string()),
        ("--focal-gamma", DEFAULT_FOCAL_GAMMA.to_string()),
        ("--focal-alpha", DEFAULT_FOCAL_ALPHA.to_string()),
        ("--step-every", DEFAULT_STEP_EVERY.to_string()),
        ("--step-gamma", DEFAULT_STEP_GAMMA.to_string()),
        ("--C", DEFAULT_C.to_string()),
        ("--max-iter", DEFAULT_MAX_ITER.to_string()),
        ("--optimizer", "rmsprop".into()),
        ("--loss", "cross-entropy".into()),
        ("--monitor", "val-loss".into()),
        ("--schedule", "constant".into()),
        ("--class-weight", "none".into()),
    ];
    for (flag, value) in want {
        let text = flag_help(&help, flag);
        assert!(
            text.contains(&format!("[default: {value}]")),
            "{flag}: the library's default is {value}, the help says:\n{text}"
        );
    }
    // The names in the help are the library's: the seed recipe is RMSprop at its own rate, and
    // the defaults of the recipe are the library's TrainConfig::default.
    assert_eq!(
        d.optimizer.kind,
        OptimizerName::RmsProp.kind(None, false, None).unwrap()
    );
    assert!(
        flag_help(&help, "--lr").contains(&format!("rmsprop {:e}", d.optimizer.kind.default_lr()))
    );
}

/// The `--flag` names in `text` (without the dashes).
fn flags_in(text: &str) -> std::collections::BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = std::collections::BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'-');
        let name: String = text[start + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if before_ok && name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.insert(name.trim_end_matches('-').to_string());
        }
        i = start + 2;
    }
    out
}

/// The commands `headstart --help` lists.
fn commands() -> Vec<String> {
    let help = ok(&["--help"]);
    let list = help
        .split("Commands:")
        .nth(1)
        .and_then(|r| r.split("Options:").next())
        .expect("a command list in --help");
    list.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_flag_in_the_help_is_in_the_readme_and_every_flag_the_readme_gives_a_command_exists() {
    use std::collections::{BTreeMap, BTreeSet};
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let cmds = commands();
    assert!(cmds.len() > 20, "{cmds:?}");
    let help: BTreeMap<&str, BTreeSet<String>> = cmds
        .iter()
        .map(|c| {
            let h = ok(&[c, "--help"]);
            let flags = h
                .lines()
                .filter_map(|l| {
                    let l = l.trim_start();
                    let l = l.strip_prefix("-h, ").unwrap_or(l);
                    let l = if l.len() > 4 && l.as_bytes()[0] == b'-' && &l[2..4] == ", " {
                        &l[4..]
                    } else {
                        l
                    };
                    l.strip_prefix("--")
                        .map(|r| r.split([' ', '<']).next().unwrap_or("").to_string())
                })
                .filter(|f| !f.is_empty() && f != "help" && f != "version")
                .collect();
            (c.as_str(), flags)
        })
        .collect();
    let mut documented: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    // `headstart CMD ... --flag` up to the end of its code span or line: the flag must exist.
    for (at, _) in readme.match_indices("headstart ") {
        let rest = &readme[at + "headstart ".len()..];
        let cmd: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        let Some(known) = help.get(cmd.as_str()) else {
            continue;
        };
        let span = rest.split(['`', '\n', '#']).next().unwrap_or("");
        for f in flags_in(span) {
            if !known.contains(&f) {
                problems.push(format!(
                    "README: `headstart {cmd} ... --{f}`: {cmd} has no --{f}"
                ));
            }
            documented
                .entry(known_key(&help, &cmd))
                .or_default()
                .insert(f);
        }
    }
    // The sections headed by a command document its flags.
    let mut shared_groups: Vec<BTreeSet<String>> = Vec::new();
    for section in readme.split("\n## ").skip(1) {
        let title = section.lines().next().unwrap_or("");
        let flags = flags_in(section);
        if title.starts_with("Flags shared by the commands") {
            for bullet in section.split("\n- ").skip(1) {
                shared_groups.push(flags_in(bullet));
            }
            for f in flags.iter().filter(|f| *f != "help") {
                if !help.values().any(|h| h.contains(f)) {
                    problems.push(format!("README's shared flags: no command has --{f}"));
                }
            }
            continue;
        }
        for c in &cmds {
            let named = title.contains(&format!("`headstart {c}`"))
                || title.contains(&format!("`{c}`"))
                || title.contains(&format!("`{c} "));
            if named {
                documented
                    .entry(c.as_str())
                    .or_default()
                    .extend(flags.iter().cloned());
            }
        }
    }
    assert!(shared_groups.len() >= 3, "the README's shared flag groups");
    for (c, flags) in &help {
        let doc = documented.get(c).cloned().unwrap_or_default();
        for f in flags {
            let shared = shared_groups
                .iter()
                .any(|g| g.contains(f) && g.iter().any(|x| flags.contains(x) && x != f));
            if !doc.contains(f) && !shared {
                problems.push(format!(
                    "`{c} --help` has --{f}, the README does not describe it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The command's own name as a key of `help`.
fn known_key<'a>(
    help: &std::collections::BTreeMap<&'a str, std::collections::BTreeSet<String>>,
    cmd: &str,
) -> &'a str {
    help.keys()
        .find(|k| **k == cmd)
        .copied()
        .expect("a known command")
}

/// The default `--help` states for `flag`, if any.
fn help_default(help: &str, flag: &str) -> Option<String> {
    let text = flag_help(help, flag);
    let at = text.find("[default: ")?;
    let rest = &text[at + "[default: ".len()..];
    Some(rest[..rest.find(']')?].to_string())
}

/// The same value written two ways (`0.00001` and `1e-5`).
fn same_value(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[test]
fn the_readme_states_the_defaults_the_help_does() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    // (command, the README's words that give defaults as `--flag VALUE` pairs)
    let stated = [
        ("train-head", "`--epochs 30 --batch-size 20 --seed 42`"),
        ("train-head", "`--val-split 0.2`"),
        ("train-head", "`--step-every 10 --step-gamma 0.1`"),
        ("train-head", "`--focal-gamma 2 --focal-alpha 0.25`"),
        ("evaluate", "`--top 10`"),
        ("classify", "[--top 5]"),
        ("finetune", "--freeze-epochs 5"),
        ("finetune", "--head-lr 2e-5"),
        ("finetune", "--epochs 10 --batch-size 20"),
        ("finetune", "--lr 1e-5"),
        ("finetune", "--val-split 0.2 --seed 42"),
        ("extract", "--calibrate-images 256"),
        ("bench-infer", "[--batch 32] [--images 256]"),
        (
            "bench-decode",
            "[--workers 1,2] [--modes exact,fast] [--images 256]",
        ),
        ("score", "--batch 32"),
    ];
    let mut problems = Vec::new();
    for (cmd, words) in stated {
        if !readme.contains(words) {
            problems.push(format!("README no longer says {words} ({cmd})"));
            continue;
        }
        let help = ok(&[cmd, "--help"]);
        let tokens: Vec<&str> = words
            .split_whitespace()
            .map(|t| t.trim_matches(['`', '[', ']']))
            .collect();
        for pair in tokens.chunks(2) {
            let [flag, value] = pair else { continue };
            match help_default(&help, flag) {
                Some(d) if same_value(&d, value) => {}
                other => problems.push(format!(
                    "{cmd} {flag}: the README says {value}, --help says {other:?}"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let version = ok(&["--version"]);
    assert_eq!(
        version.trim(),
        format!("headstart {}", env!("CARGO_PKG_VERSION"))
    );
}
