//! Loading the document: read the config key, parse and validate it, resolve its references
//! (basic-auth users from KV or a file) and render it.

use tracing::info;

use super::{Action, Error, Facts, Operator, Result, read_key};
use crate::consul::ConsulApi;
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::render::{RenderContext, Rendered};
use crate::spec::{self, FieldError, UsersFrom, ValidatedSpec};
use crate::status::Report;
use crate::transport::QueryOptions;

/// Everything a pass derives from the document.
pub(super) struct Loaded {
    pub(super) spec: ValidatedSpec,
    pub(super) rendered: Rendered,
    pub(super) index: u64,
}

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Reads, parses, validates and renders the document. `Ok(None)`: nothing to act on (the
    /// status says why); `Err`: back off.
    pub(super) async fn load(&mut self) -> Result<Option<Loaded>, Action> {
        let key = self.config.config_key();
        let pair = match read_key(&*self.consul, &key, "the config key").await {
            Ok(pair) => {
                self.last_pass_index = pair.as_ref().map_or(0, |p| p.modify_index);
                pair
            }
            Err(e) => {
                return Err(self.observation_failed(&e, None).await);
            }
        };
        let Some(pair) = pair else {
            let reason = format!("the config key {key} is absent");
            self.report_plain(0, Report::NoConfig { reason: &reason })
                .await;
            return Ok(None);
        };
        if pair.value.iter().all(u8::is_ascii_whitespace) {
            let reason = format!("the config key {key} is empty");
            self.report_plain(pair.modify_index, Report::NoConfig { reason: &reason })
                .await;
            return Ok(None);
        }
        let spec = match spec::load(&pair.value) {
            Ok(spec) => spec,
            Err(e) => {
                let errors = e.field_errors();
                info!(
                    errors = errors.len(),
                    "the config document is invalid; nothing is changed"
                );
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                return Ok(None);
            }
        };
        let users = match self.basic_auth_users(&spec).await {
            Ok(users) => users,
            Err(e) => {
                let facts = Facts {
                    index: pair.modify_index,
                    digest: Some(spec.digest().to_owned()),
                    proxy: Some(spec.proxy()),
                    job_version: None,
                    good_job: None,
                    warnings: spec.warnings().to_vec(),
                };
                return Err(self.observation_failed(&e, Some(&facts)).await);
            }
        };
        let ctx = RenderContext {
            prefix: self.config.prefix.clone(),
            owner: self.config.owner.clone(),
            basic_auth_users: users,
        };
        match self.proxies.driver(spec.proxy()).render(&spec, &ctx) {
            Ok(rendered) => Ok(Some(Loaded {
                spec,
                rendered,
                index: pair.modify_index,
            })),
            Err(e) => {
                // The same document always renders the same way: report it like a validation
                // error and wait for an edit.
                let errors = vec![FieldError::new("", e.to_string())];
                self.report_plain(pair.modify_index, Report::Invalid { errors: &errors })
                    .await;
                Ok(None)
            }
        }
    }

    pub(super) async fn basic_auth_users(
        &self,
        spec: &ValidatedSpec,
    ) -> Result<Option<Vec<String>>> {
        let Some(auth) = spec.basic_auth() else {
            return Ok(None);
        };
        let text = match &auth.users_from {
            UsersFrom::ConsulKey(key) => {
                let what = format!("KV key {key}");
                match self.consul.kv_get(key, QueryOptions::NOW).await {
                    Ok((Some(pair), _)) => {
                        String::from_utf8(pair.value).map_err(|_| Error::Secret {
                            reference: what.clone(),
                            reason: "not UTF-8".into(),
                        })?
                    }
                    Ok((None, _)) => {
                        return Err(Error::Secret {
                            reference: what,
                            reason: "absent".into(),
                        });
                    }
                    Err(source) => return Err(Error::Consul { what, source }),
                }
            }
            UsersFrom::File(path) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| Error::Secret {
                        reference: format!("file {path}"),
                        reason: e.kind().to_string(),
                    })?
            }
        };
        let users = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        Ok(Some(users))
    }
}
