//! `headstart models`: the bases headstart can fetch by name (and which are present), then the
//! architecture presets.

use headstart::error::Result;
use headstart::fetch::{models_dir, SOURCES};

pub fn run() -> Result<()> {
    let dir = models_dir();
    println!(
        "fetchable by name (headstart fetch NAME, or --model NAME), in {}:",
        dir.display()
    );
    for s in SOURCES {
        let present = if dir.join(s.file).is_file() {
            "present"
        } else {
            "not fetched"
        };
        println!("  {:<30} {:<12} {}", s.name, present, s.what);
    }
    println!();
    print!("{}", headstart::data::presets::table());
    Ok(())
}
