//! An admin command with no server running: the actors start on the store for the command
//! alone — no HTTP, no relays, no sweeps — and stop with it, the store flushed.

use serde_json::Value;

use roost_storage::Store;

use super::{AdminError, Command};
use crate::{server, settings::Settings};

pub fn run(settings: &Settings, command: Command) -> Result<Value, AdminError> {
    actix_web::rt::System::new().block_on(async {
        let store = Store::open_with(&settings.storage.path, settings.storage.options())?;
        let actors = server::start_actors(settings, &store)?;
        let answer = actors.admin_core(settings, &store, None).run(command).await;
        actors.mls_threads.stop();
        store.close()?;
        answer
    })
}
