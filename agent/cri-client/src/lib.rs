//! A CRI v1 client over the runtime's unix socket, with errors that say
//! what is wrong and what to do (a bare gRPC "Unimplemented" is not one).

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long any one CRI call may take (image pulls excepted).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(
        "cannot reach the CRI socket {socket}: {why}; is containerd running, and is this the \
         right `cri_socket`?"
    )]
    Unreachable { socket: PathBuf, why: String },
    #[error(
        "the runtime at {socket} does not serve CRI v1 {service}: its CRI plugin is missing or \
         disabled. For containerd, remove \"cri\" from `disabled_plugins` in its config.toml, \
         restart it, and check `ctr plugins ls | grep cri` shows ok"
    )]
    NotCri {
        socket: PathBuf,
        service: &'static str,
    },
    #[error("the runtime at {socket} is not ready: {why}")]
    NotReady { socket: PathBuf, why: String },
    #[error("CRI {call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
}

impl CriError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

#[derive(Clone)]
pub struct CriClient {
    socket: PathBuf,
    channel: Channel,
}

impl CriClient {
    /// Connects lazily: the first call opens the socket.
    pub fn new(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::1]:1")
            .map_err(|e| CriError::Unreachable {
                socket: path.clone(),
                why: e.to_string(),
            })?
            .timeout(CALL_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Self {
            socket: socket.to_path_buf(),
            channel,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// Maps a failed call; "unreachable" and "unimplemented" get their own
    /// errors because they mean the socket or the plugin is wrong.
    pub fn err(
        &self,
        call: &'static str,
        service: &'static str,
        status: tonic::Status,
    ) -> CriError {
        match status.code() {
            tonic::Code::Unimplemented => CriError::NotCri {
                socket: self.socket.clone(),
                service,
            },
            tonic::Code::Unavailable => CriError::Unreachable {
                socket: self.socket.clone(),
                why: status.message().to_string(),
            },
            _ => CriError::Call {
                call,
                status: Box::new(status),
            },
        }
    }

    /// Checks both services and the runtime's readiness. Host-network pods
    /// need no CNI, so NetworkReady=false is fine.
    pub async fn check(&self) -> Result<cri::VersionResponse, CriError> {
        let version = self
            .runtime()
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|s| self.err("Version", "RuntimeService", s))?
            .into_inner();
        self.images()
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .map_err(|s| self.err("ImageFsInfo", "ImageService", s))?;
        let status = self
            .runtime()
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(|s| self.err("Status", "RuntimeService", s))?
            .into_inner();
        if let Some(st) = status.status {
            if let Some(c) = st
                .conditions
                .iter()
                .find(|c| c.r#type == "RuntimeReady" && !c.status)
            {
                return Err(CriError::NotReady {
                    socket: self.socket.clone(),
                    why: format!("{}: {}", c.reason, c.message),
                });
            }
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gRPC server that serves nothing: every call is "Unimplemented", as
    /// on a containerd whose CRI plugin is disabled.
    async fn no_cri(socket: &Path) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(incoming)
                .await;
        })
    }

    #[tokio::test]
    async fn a_runtime_without_cri_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let server = no_cri(&socket).await;
        let err = CriClient::new(&socket).unwrap().check().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CriError::NotCri { .. }), "{err:?}");
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("CRI plugin is missing or disabled"), "{text}");
        assert!(text.contains("disabled_plugins"), "{text}");
        server.abort();

        // Nothing listening: the socket is named, with a hint.
        let missing = dir.path().join("absent.sock");
        let err = CriClient::new(&missing).unwrap().check().await.unwrap_err();
        assert!(matches!(err, CriError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("is containerd running"), "{err}");
    }
}
