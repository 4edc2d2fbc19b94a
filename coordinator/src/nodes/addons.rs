//! The add-ons' objects ([`crate::cluster::addons`]) into one cluster:
//! server-side apply of those that are on, deletion of those that are off
//! (only when the object there carries oneinfra's managed-by label).

use crate::cluster::addons::Object;
use crate::cluster::node_bootstrap::{MANAGED_BY, MANAGED_BY_LABEL};
use anyhow::{Context, Result};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

const FIELD_MANAGER: &str = "oneinfra";

trait Kind: Resource + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<K> Kind for K where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

fn namespaced<K>(client: &kube::Client, o: &K) -> Api<K>
where
    K: Kind<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    let ns = o.meta().namespace.as_deref().unwrap_or("default");
    Api::namespaced(client.clone(), ns)
}

fn cluster_wide<K>(client: &kube::Client) -> Api<K>
where
    K: Kind<Scope = ClusterResourceScope>,
    K::DynamicType: Default,
{
    Api::all(client.clone())
}

async fn apply_with<K>(api: Api<K>, o: &K) -> Result<(), kube::Error>
where
    K: Kind,
    K::DynamicType: Default,
{
    let name = o.meta().name.clone().unwrap_or_default();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(o)).await.map(|_| ())
}

/// Deletes `o`'s namesake when it is ours; true when something was deleted.
async fn delete_with<K>(api: Api<K>, o: &K) -> Result<bool, kube::Error>
where
    K: Kind,
    K::DynamicType: Default,
{
    let name = o.meta().name.clone().unwrap_or_default();
    let Some(there) = api.get_opt(&name).await? else {
        return Ok(false);
    };
    let ours = there
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    if !ours {
        return Ok(false);
    }
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) async fn apply(client: &kube::Client, o: &Object) -> Result<()> {
    let r = match o {
        Object::ServiceAccount(x) => apply_with(namespaced(client, x), x).await,
        Object::ConfigMap(x) => apply_with(namespaced(client, x), x).await,
        Object::Role(x) => apply_with(namespaced(client, x), x).await,
        Object::RoleBinding(x) => apply_with(namespaced(client, x), x).await,
        Object::DaemonSet(x) => apply_with(namespaced(client, x), x).await,
        Object::Deployment(x) => apply_with(namespaced(client, x), x).await,
        Object::Service(x) => apply_with(namespaced(client, x), x).await,
        Object::ClusterRole(x) => apply_with(cluster_wide(client), x).await,
        Object::ClusterRoleBinding(x) => apply_with(cluster_wide(client), x).await,
    };
    r.with_context(|| format!("apply {}", o.describe()))
}

pub(crate) async fn remove(client: &kube::Client, o: &Object) -> Result<bool> {
    let r = match o {
        Object::ServiceAccount(x) => delete_with(namespaced(client, x), x).await,
        Object::ConfigMap(x) => delete_with(namespaced(client, x), x).await,
        Object::Role(x) => delete_with(namespaced(client, x), x).await,
        Object::RoleBinding(x) => delete_with(namespaced(client, x), x).await,
        Object::DaemonSet(x) => delete_with(namespaced(client, x), x).await,
        Object::Deployment(x) => delete_with(namespaced(client, x), x).await,
        Object::Service(x) => delete_with(namespaced(client, x), x).await,
        Object::ClusterRole(x) => delete_with(cluster_wide(client), x).await,
        Object::ClusterRoleBinding(x) => delete_with(cluster_wide(client), x).await,
    };
    r.with_context(|| format!("delete {}", o.describe()))
}
