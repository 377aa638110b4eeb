//! The help a user reads agrees with the code: the defaults `train-head --help` states are the
//! library's.

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
