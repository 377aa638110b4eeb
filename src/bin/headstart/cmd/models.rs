//! `headstart models`: the architecture presets.

use headstart::error::Result;

pub fn run() -> Result<()> {
    print!("{}", headstart::data::presets::table());
    Ok(())
}
