//! The one mapping from everything that can go wrong to an HTTP status and a JSON body.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};

use roost_actors::{
    accounts::AccountsError, group::GroupError, key_packages::KeyPackageError, qs::DeliveryError,
    queue::QueueError, registry::RegistryError, AskError,
};
use roost_protocol::{api::ErrorBody, auth::AuthError, codec::CodecError};
use roost_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is malformed: {0}")]
    MalformedBody(String),
    #[error("the request body exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body did not arrive within {0} s (limits.body_read_secs)")]
    BodyTimeout(u64),
    #[error("{0}")]
    BadPath(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    KeyPackages(#[from] KeyPackageError),
    #[error("no connection package of this client was handed out under that hash")]
    UnknownConnectionPackage,
    #[error("the sealed connection request takes {0} bytes; clients open at most {max}", max = roost_protocol::connection::MAX_SEALED_REQUEST)]
    ConnectionRequestTooLarge(usize),
    #[error("too many requests ({setting}); retry in {retry_after_secs} s")]
    RateLimited {
        retry_after_secs: u64,
        setting: &'static str,
    },
    #[error("the server is shutting down or overloaded")]
    Unavailable,
    #[error("this server does not federate with {0}")]
    DomainNotAllowed(roost_protocol::Domain),
    #[error("this relay is for {0}, not for this server")]
    WrongDomain(String),
    #[error("the queue reference does not open at this server")]
    BadQueueRef,
    #[error("a relay request carries {0} deliveries; at most {max} are taken", max = roost_protocol::federation::MAX_RELAY_DELIVERIES)]
    TooManyDeliveries(usize),
    #[error(transparent)]
    Peer(#[from] crate::federation::PeerKeyError),
    #[error(transparent)]
    Pass(#[from] super::tokens::PassError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<CodecError> for ApiError {
    fn from(e: CodecError) -> Self {
        ApiError::MalformedBody(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthenticated(e.to_string())
    }
}

impl<E> From<AskError<E>> for ApiError
where
    ApiError: From<E>,
{
    fn from(e: AskError<E>) -> Self {
        match e {
            AskError::Unavailable => ApiError::Unavailable,
            AskError::Actor(e) => e.into(),
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::WrongDomain(to) => ApiError::WrongDomain(to.to_string()),
            DeliveryError::BadQueueRef => ApiError::BadQueueRef,
            DeliveryError::Queue(e) => ApiError::Queue(e),
        }
    }
}

impl ApiError {
    /// What the client is told: the JSON body of the error response.
    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        }
    }

    /// The store's failure behind this error, wherever it was met.
    fn storage_failure(&self) -> Option<&StorageError> {
        match self {
            ApiError::Storage(e)
            | ApiError::Accounts(AccountsError::Storage(e))
            | ApiError::Queue(QueueError::Storage(e))
            | ApiError::Registry(RegistryError::Storage(e))
            | ApiError::Group(GroupError::Storage(e))
            | ApiError::KeyPackages(KeyPackageError::Storage(e))
            | ApiError::Pass(super::tokens::PassError::Issue(
                roost_actors::tokens::IssueError::Storage(e),
            )) => Some(e),
            _ => None,
        }
    }

    fn code(&self) -> &'static str {
        if let Some(e) = self.storage_failure() {
            return if e.is_full() {
                "storage_full"
            } else {
                "internal"
            };
        }
        match self {
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::BadPath(_) => "bad_path",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Accounts(e) => match e {
                AccountsError::WrongDomain(_) => "wrong_domain",
                AccountsError::TokenRequired => "token_required",
                AccountsError::BadToken => "bad_token",
                AccountsError::UserTaken => "user_taken",
                AccountsError::BadPassword => "bad_password",
                AccountsError::WrongPassword => "wrong_password",
                AccountsError::BadProof => "bad_proof",
                AccountsError::UnknownClient => "unknown_client",
                AccountsError::TooManyClients(_) => "too_many_clients",
                AccountsError::UnknownUser => "unknown_user",
                AccountsError::UserDeleted => "user_deleted",
                AccountsError::Deactivated => "account_deactivated",
                AccountsError::UnknownToken(_) => "unknown_token",
                AccountsError::Storage(_) | AccountsError::Internal(_) => "internal",
            },
            ApiError::Queue(e) => match e {
                QueueError::UnknownQueue => "unknown_queue",
                QueueError::MessageTooLarge { .. } => "message_too_large",
                QueueError::QueueFull { .. } => "queue_full",
                QueueError::Storage(_) | QueueError::Crypto(_) => "internal",
            },
            ApiError::Registry(e) => match e {
                RegistryError::UnknownUser => "unknown_user",
                RegistryError::InvalidPackage { .. } => "invalid_connection_package",
                RegistryError::TooMany => "too_many_connection_packages",
                RegistryError::ProfileTooLarge { .. } => "profile_too_large",
                RegistryError::ProfileOfAnotherUser => "profile_of_another_user",
                RegistryError::TooManyProfiles => "too_many_profiles",
                RegistryError::UnknownProfile => "unknown_profile",
                RegistryError::Storage(_) => "internal",
            },
            ApiError::Group(e) => match e {
                GroupError::UnknownGroup => "unknown_group",
                GroupError::Expired { .. } => "group_expired",
                GroupError::GroupExists => "group_exists",
                GroupError::WrongKey => "wrong_ear_key",
                GroupError::NotAMember => "not_a_member",
                GroupError::StaleEpoch => "stale_epoch",
                GroupError::NotJoinable => "not_joinable",
                GroupError::Invalid(_) => "invalid_mls_message",
                GroupError::GroupFull(_) => "group_full",
                GroupError::OperationReused => "operation_reused",
                GroupError::StateTooLarge { .. } => "group_state_too_large",
                GroupError::KeyPackageUsed => "key_package_used",
                GroupError::Storage(_) => "internal",
            },
            ApiError::KeyPackages(e) => match e {
                KeyPackageError::UnknownToken => "unknown_friendship_token",
                KeyPackageError::InvalidEntry { .. } => "invalid_key_package",
                KeyPackageError::TooMany => "too_many_key_packages",
                KeyPackageError::Storage(_) => "internal",
            },
            ApiError::UnknownConnectionPackage => "unknown_connection_package",
            ApiError::ConnectionRequestTooLarge(_) => "connection_request_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable => "unavailable",
            ApiError::DomainNotAllowed(_) => "domain_not_allowed",
            ApiError::WrongDomain(_) => "wrong_domain",
            ApiError::BadQueueRef => "bad_queue_ref",
            ApiError::TooManyDeliveries(_) => "too_many_deliveries",
            ApiError::Peer(crate::federation::PeerKeyError::WrongDomain(_)) => "peer_wrong_domain",
            ApiError::Peer(_) => "peer_unreachable",
            ApiError::Pass(e) => e.code(),
            ApiError::Storage(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        if let Some(e) = self.storage_failure() {
            return if e.is_full() {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
        }
        match self {
            ApiError::MalformedBody(_) | ApiError::BadPath(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Accounts(e) => match e {
                AccountsError::WrongDomain(_)
                | AccountsError::BadPassword
                | AccountsError::BadProof => StatusCode::BAD_REQUEST,
                AccountsError::TokenRequired | AccountsError::BadToken => StatusCode::FORBIDDEN,
                AccountsError::UserTaken => StatusCode::CONFLICT,
                AccountsError::WrongPassword => StatusCode::UNAUTHORIZED,
                AccountsError::UnknownClient => StatusCode::NOT_FOUND,
                AccountsError::TooManyClients(_) => StatusCode::CONFLICT,
                AccountsError::UnknownUser | AccountsError::UnknownToken(_) => {
                    StatusCode::NOT_FOUND
                }
                AccountsError::UserDeleted => StatusCode::GONE,
                AccountsError::Deactivated => StatusCode::FORBIDDEN,
                AccountsError::Storage(_) | AccountsError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Queue(e) => match e {
                QueueError::UnknownQueue => StatusCode::NOT_FOUND,
                QueueError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                QueueError::QueueFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
                QueueError::Storage(_) | QueueError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Registry(e) => match e {
                RegistryError::UnknownUser => StatusCode::NOT_FOUND,
                RegistryError::InvalidPackage { .. } => StatusCode::BAD_REQUEST,
                RegistryError::TooMany => StatusCode::CONFLICT,
                RegistryError::ProfileTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                RegistryError::ProfileOfAnotherUser => StatusCode::FORBIDDEN,
                RegistryError::TooManyProfiles => StatusCode::CONFLICT,
                RegistryError::UnknownProfile => StatusCode::NOT_FOUND,
                RegistryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Group(e) => match e {
                GroupError::UnknownGroup => StatusCode::NOT_FOUND,
                GroupError::Expired { .. } => StatusCode::GONE,
                GroupError::WrongKey | GroupError::NotAMember => StatusCode::FORBIDDEN,
                GroupError::GroupExists
                | GroupError::StaleEpoch
                | GroupError::NotJoinable
                | GroupError::GroupFull(_)
                | GroupError::OperationReused
                | GroupError::KeyPackageUsed => StatusCode::CONFLICT,
                GroupError::Invalid(_) => StatusCode::BAD_REQUEST,
                GroupError::StateTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                GroupError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::KeyPackages(e) => match e {
                KeyPackageError::UnknownToken => StatusCode::NOT_FOUND,
                KeyPackageError::InvalidEntry { .. } => StatusCode::BAD_REQUEST,
                KeyPackageError::TooMany => StatusCode::CONFLICT,
                KeyPackageError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::UnknownConnectionPackage => StatusCode::NOT_FOUND,
            ApiError::ConnectionRequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DomainNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::WrongDomain(_) | ApiError::BadQueueRef | ApiError::TooManyDeliveries(_) => {
                StatusCode::BAD_REQUEST
            }
            // The sender's key cannot be had: it may try again.
            ApiError::Peer(_) => StatusCode::UNAUTHORIZED,
            ApiError::Pass(e) => e.status(),
            ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // A full queue (507) or an overloaded server (503) is a limit doing its work, not a fault.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = HttpResponse::build(status);
        let retry_after = match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::Pass(e) => e.retry_after_secs(),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        response.json(self.body())
    }
}
