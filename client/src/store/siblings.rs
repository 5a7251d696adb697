//! This user's new clients that this client has yet to bring into the user's groups and
//! connections (`new_siblings`: client id → ()), noted when the server announces one.

use roost_protocol::ClientId;

use super::{State, StateError};

impl State {
    pub fn add_new_sibling(&self, client: &ClientId) -> Result<(), StateError> {
        self.new_siblings
            .insert(client.0, &[])
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    /// The new clients still to bring in.
    pub fn new_siblings(&self) -> Result<Vec<ClientId>, StateError> {
        self.new_siblings
            .iter()
            .keys()
            .map(|key| {
                let key = key.map_err(|e| self.store_error(e))?;
                let id: [u8; 16] = key.as_ref().try_into().map_err(|_| {
                    self.corrupt("new_siblings", &key, "the key is not a client id")
                })?;
                Ok(ClientId(id))
            })
            .collect()
    }

    /// The client is in every group, or gone.
    pub fn remove_new_sibling(&self, client: &ClientId) -> Result<(), StateError> {
        self.new_siblings
            .remove(client.0)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }
}
