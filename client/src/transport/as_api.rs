//! The authentication service's endpoints: users and clients, AS credentials, connection
//! packages and connection queues.

use reqwest::Method;
use roost_protocol::{
    api::{
        self, AddClient, ClientList, ConnectionPackageCount, ConnectionPackages,
        PublishConnectionPackages, RegisterUser,
    },
    codec,
    connection::{ConnectionPackage, SealedConnectionRequest},
    credentials::{AsCredentials, ClientCredential},
    profile::{EncryptedProfile, ProfileId},
    tokens::policy::{IssueRequest, IssueResponse, TokenPolicy, AS_TOKENS, AS_TOKEN_POLICY},
    ClientId, UserName,
};

use super::{retrying, Server, ServerError, Signer};

impl Server {
    /// `GET /as/v1/credentials`: the domain's AS credential chain roots. Public.
    pub async fn as_credentials(&self) -> Result<AsCredentials, ServerError> {
        self.get(api::AS_CREDENTIALS, None).await
    }

    /// `POST /as/v1/users`: creates a user with its first client. Retried on a transient
    /// failure: the AS answers a repeat (the same client key) with the credential it issued.
    pub async fn register_user(
        &self,
        body: &RegisterUser,
    ) -> Result<ClientCredential, ServerError> {
        let body = codec::encode(body);
        retrying(|| self.post(api::AS_USERS, body.clone(), None)).await
    }

    /// `POST /as/v1/users/{user}/clients`: adds a client, authenticated by the user's password;
    /// retried like [`Server::register_user`].
    pub async fn add_client(
        &self,
        user: &UserName,
        body: &AddClient,
    ) -> Result<ClientCredential, ServerError> {
        let (path, body) = (api::as_user_clients(user), codec::encode(body));
        retrying(|| self.post(&path, body.clone(), None)).await
    }

    /// `GET /as/v1/clients`: every client of the signer's user.
    pub async fn list_clients(&self, signer: Signer<'_>) -> Result<ClientList, ServerError> {
        self.get(api::AS_OWN_CLIENTS, Some(signer)).await
    }

    /// `DELETE /as/v1/clients/{id}`: removes one of the signer's user's clients.
    pub async fn delete_client(
        &self,
        signer: Signer<'_>,
        client: &ClientId,
    ) -> Result<(), ServerError> {
        let path = api::as_own_client(client);
        self.call_no_content(Method::DELETE, &path, None, Some(signer))
            .await
    }

    /// `POST /as/v1/connection-packages`: publishes at most [`api::MAX_PUBLISH`] packages of
    /// the signer; answers how many it now has.
    pub async fn publish_connection_packages(
        &self,
        signer: Signer<'_>,
        packages: Vec<ConnectionPackage>,
    ) -> Result<ConnectionPackageCount, ServerError> {
        let body = codec::encode(&PublishConnectionPackages { packages });
        self.post(api::AS_CONNECTION_PACKAGES, body, Some(signer))
            .await
    }

    /// `GET /as/v1/connection-packages`: how many packages the AS holds for the signer.
    pub async fn connection_package_count(
        &self,
        signer: Signer<'_>,
    ) -> Result<ConnectionPackageCount, ServerError> {
        self.get(api::AS_CONNECTION_PACKAGES, Some(signer)).await
    }

    /// `GET /as/v1/users/{user}/connection-packages`: one package per client of `user`,
    /// unchecked (see `Connections::discover`). Public and rate limited (429 `rate_limited`).
    pub async fn connection_packages(
        &self,
        user: &UserName,
    ) -> Result<ConnectionPackages, ServerError> {
        self.get(&api::as_user_connection_packages(user), None)
            .await
    }

    /// `POST /as/v1/connection-queues/{client}`: queues a sealed connection request for
    /// `client`. Unauthenticated: the responder's AS must not learn who asks.
    pub async fn send_connection_request(
        &self,
        client: &ClientId,
        request: &SealedConnectionRequest,
    ) -> Result<(), ServerError> {
        let path = api::as_connection_queue(client);
        self.call_no_content(Method::POST, &path, Some(codec::encode(request)), None)
            .await
    }

    /// `GET /as/v1/token-policy`: the server's issuer keys and what its operations cost.
    pub async fn token_policy(&self) -> Result<TokenPolicy, ServerError> {
        self.get(AS_TOKEN_POLICY, None).await
    }

    /// `POST /as/v1/tokens`: blind signatures for this user's token requests.
    pub async fn issue_tokens(
        &self,
        request: &IssueRequest,
        signer: Signer<'_>,
    ) -> Result<IssueResponse, ServerError> {
        self.post(AS_TOKENS, codec::encode(request), Some(signer))
            .await
    }

    /// `PUT /as/v1/profiles/{id}`: stores (or replaces) one of this user's profiles.
    pub async fn store_profile(
        &self,
        signer: Signer<'_>,
        id: &ProfileId,
        profile: &EncryptedProfile,
    ) -> Result<(), ServerError> {
        let body = codec::encode(profile);
        let path = api::as_profile(id);
        retrying(|| self.call_no_content(Method::PUT, &path, Some(body.clone()), Some(signer)))
            .await
    }

    /// `DELETE /as/v1/profiles/{id}`: deletes one of this user's profiles.
    pub async fn delete_profile(
        &self,
        signer: Signer<'_>,
        id: &ProfileId,
    ) -> Result<(), ServerError> {
        let path = api::as_profile(id);
        retrying(|| self.call_no_content(Method::DELETE, &path, None, Some(signer))).await
    }

    /// `GET /as/v1/profiles/{id}`: an encrypted profile, unauthenticated.
    pub async fn fetch_profile(&self, id: &ProfileId) -> Result<EncryptedProfile, ServerError> {
        let path = api::as_profile(id);
        retrying(|| self.get(&path, None)).await
    }
}
