//! Everything that talks to the API server: connecting with kubectl's flags, discovering how
//! Calico is served, reading the inventory the facts come from, and the single write path.

pub mod access;
pub mod api;
pub mod errors;
pub mod flow_source;
pub mod inventory;
pub mod write;

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::error::{Error, Result};
pub use api::Api;

/// kubectl's connection flags, validated.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
    pub request_timeout: Option<Duration>,
}

/// A connection to one cluster, and who we are there.
#[derive(Clone)]
pub struct Cluster {
    pub api: Api,
    pub client: kube::Client,
    pub config: kube::Config,
    /// The kubeconfig context in use (what `lockdown` asks the operator to type).
    pub context_name: String,
    /// The kubeconfig user (or the impersonated one), for the history when the server cannot say.
    pub kubeconfig_user: String,
}

impl Cluster {
    /// Who is running this: the server's answer where it supports SelfSubjectReview.
    pub async fn whoami(&self) -> String {
        let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let target = errors::Target {
            verb: "create",
            resource: "selfsubjectreviews.authentication.k8s.io".into(),
            namespace: None,
            name: None,
        };
        match self
            .api
            .post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                &review,
                &target,
            )
            .await
        {
            Ok(Some(answer)) => answer
                .pointer("/status/userInfo/username")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| self.kubeconfig_user.clone()),
            Ok(None) => self.kubeconfig_user.clone(),
            Err(err) => {
                tracing::warn!(
                    "cannot create selfsubjectreviews.authentication.k8s.io ({err}); recording the kubeconfig user"
                );
                self.kubeconfig_user.clone()
            }
        }
    }
}

/// Read the kubeconfig the way kubectl does: --kubeconfig, else the $KUBECONFIG list merged,
/// else ~/.kube/config.
pub fn load_kubeconfig(path: Option<&PathBuf>) -> Result<Kubeconfig> {
    let loaded = match path {
        Some(path) => {
            if !path.exists() {
                return Err(Error::Config {
                    message: format!("kubeconfig {} does not exist", path.display()),
                    hint: Some("pass an existing file to --kubeconfig".into()),
                });
            }
            Kubeconfig::read_from(path)
        }
        None => Kubeconfig::read(),
    };
    loaded.map_err(|err| kubeconfig_error(path, err))
}

fn kubeconfig_error(path: Option<&PathBuf>, err: KubeconfigError) -> Error {
    let source = path.map_or_else(
        || "the kubeconfig ($KUBECONFIG or ~/.kube/config)".to_string(),
        |p| format!("kubeconfig {}", p.display()),
    );
    let detail = match &err {
        KubeconfigError::ReadConfig(io, _) => io.to_string(),
        KubeconfigError::Parse(e) => format!("it is not valid YAML: {e}"),
        other => other.to_string(),
    };
    Error::Config {
        message: format!("cannot read {source}: {detail}"),
        hint: Some(
            "check the file with `kubectl config view`, or point --kubeconfig at another one"
                .into(),
        ),
    }
}

/// Check names against the kubeconfig before anything is sent, so typos are usage errors.
pub fn resolve_context(
    kubeconfig: &Kubeconfig,
    options: &ConnectOptions,
) -> Result<(String, String)> {
    let context_name = options
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone().filter(|c| !c.is_empty()))
        .ok_or_else(|| Error::Config {
            message: "the kubeconfig has no current context".into(),
            hint: Some("pass --context NAME or run `kubectl config use-context NAME`".into()),
        })?;
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .ok_or_else(|| Error::Config {
            message: format!("context {context_name:?} is not in the kubeconfig"),
            hint: Some(format!("known contexts: {}", names.join(", "))),
        })?;
    if let Some(cluster) = &options.cluster
        && !kubeconfig.clusters.iter().any(|c| &c.name == cluster)
    {
        return Err(Error::Config {
            message: format!("cluster {cluster:?} is not in the kubeconfig"),
            hint: None,
        });
    }
    if let Some(user) = &options.user
        && !kubeconfig.auth_infos.iter().any(|u| &u.name == user)
    {
        return Err(Error::Config {
            message: format!("user {user:?} is not in the kubeconfig"),
            hint: None,
        });
    }
    let user = options
        .as_user
        .clone()
        .or_else(|| options.user.clone())
        .or_else(|| {
            context
                .context
                .as_ref()
                .map(|c| c.user.clone().unwrap_or_default())
        })
        .unwrap_or_default();
    Ok((context_name, user))
}

pub async fn connect(options: &ConnectOptions) -> Result<Cluster> {
    let kubeconfig = load_kubeconfig(options.kubeconfig.as_ref())?;
    let (context_name, kubeconfig_user) = resolve_context(&kubeconfig, options)?;
    let loader_options = KubeConfigOptions {
        context: Some(context_name.clone()),
        cluster: options.cluster.clone(),
        user: options.user.clone(),
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &loader_options)
        .await
        .map_err(|err| kubeconfig_error(options.kubeconfig.as_ref(), err))?;
    if let Some(user) = &options.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !options.as_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(options.as_groups.clone());
    }
    if let Some(timeout) = options.request_timeout {
        config.read_timeout = Some(timeout);
        config.connect_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
    }
    let client = kube::Client::try_from(config.clone()).map_err(|err| Error::Config {
        message: format!("cannot build a client for context {context_name:?}: {err}"),
        hint: Some(
            "check the context's certificates and server URL with `kubectl config view --minify`"
                .into(),
        ),
    })?;
    Ok(Cluster {
        api: Api::new(client.clone()),
        client,
        config,
        context_name,
        kubeconfig_user,
    })
}
