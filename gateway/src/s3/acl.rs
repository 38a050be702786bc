//! ACLs: Put/GetBucketAcl, Put/GetObjectAcl, and the ACL a write sets (`x-amz-acl` and
//! `x-amz-grant-*` on CreateBucket, PutObject, CopyObject, CreateMultipartUpload; the `acl`
//! field of a form upload).
//!
//! A bucket's grants are its [`Setting::Acl`] document (JSON); an object's are part of its
//! version's metadata ([`ObjectMeta::acl`]), so they travel with versions and survive a
//! reindex, and a copy gets the ACL its request names (private by default), not its
//! source's, as on S3. `crate::access::acl` says what the grants mean; the access check
//! (`crate::auth`) applies them. The bucket's public access block refuses a public ACL
//! (BlockPublicAcls) or makes its public grants count for nothing (IgnorePublicAcls).
//!
//! [`ObjectMeta::acl`]: crate::store::meta::ObjectMeta::acl

use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::{Gateway, RequestError, RequestResult, blocking, object_path, owner};
use crate::access::Caller;
use crate::access::acl::{self, AclError, AclHeaders};
use crate::store::meta::{AclGrant, AclGrantee};
use crate::store::settings::Setting;
use crate::store::versions::Found;

/// Which canonical user ids a grant may name: the owner's, the admin key's and the scoped
/// keys' of this gateway.
async fn known_ids(caller: Option<&Caller>) -> RequestResult<impl Fn(&str) -> bool> {
    let (admin, ring) = match caller {
        Some(c) => (
            Some(c.access.admin_id().to_owned()),
            Some(
                c.access
                    .keys()
                    .ring()
                    .await
                    .map_err(|e| RequestError::SlowDown {
                        message: format!("{e}; retry shortly"),
                        retry_after: 1,
                    })?,
            ),
        ),
        None => (None, None),
    };
    Ok(move |id: &str| {
        admin.as_deref() == Some(id) || ring.as_ref().is_some_and(|r| r.get(id).is_some())
    })
}

/// Refuses a public ACL on a bucket whose public access block says BlockPublicAcls.
fn refuse_public(gw: &Gateway, bucket: &str, grants: &[AclGrant]) -> RequestResult<()> {
    if acl::is_public(grants)
        && crate::access::public_access_block(&gw.store, bucket).block_public_acls
    {
        return Err(RequestError::Forbidden(
            "the bucket's public access block (BlockPublicAcls) refuses public ACLs".into(),
        ));
    }
    Ok(())
}

/// The ACL a write's headers set (`None`: private, which is kept as no ACL at all), checked
/// against the bucket's public access block.
pub(crate) async fn write_acl(
    gw: &Gateway,
    bucket: &str,
    headers: AclHeaders<'_>,
    extensions: &http::Extensions,
) -> RequestResult<Option<Vec<AclGrant>>> {
    let given = headers.canned.is_some()
        || [
            headers.full_control,
            headers.read,
            headers.read_acp,
            headers.write,
            headers.write_acp,
        ]
        .iter()
        .any(Option::is_some);
    if !given {
        return Ok(None);
    }
    let known = known_ids(extensions.get::<Caller>()).await?;
    let Some(grants) = headers.grants(&known)? else {
        return Ok(None);
    };
    refuse_public(gw, bucket, &grants)?;
    Ok((grants != acl::or_private(None)).then_some(grants))
}

/// The grants of an AccessControlPolicy document.
fn from_policy(
    policy: AccessControlPolicy,
    known: &dyn Fn(&str) -> bool,
) -> Result<Vec<AclGrant>, AclError> {
    if let Some(id) = policy.owner.and_then(|o| o.id)
        && id != acl::OWNER_ID
    {
        return Err(AclError::InvalidArgument(format!(
            "Invalid id '{id}': the owner of every bucket and object is '{}'",
            acl::OWNER_ID
        )));
    }
    let mut out = Vec::new();
    for g in policy.grants.unwrap_or_default() {
        let permission = acl::permission(
            g.permission
                .as_ref()
                .ok_or_else(|| AclError::Malformed("a Grant has no Permission".into()))?
                .as_str(),
        )?;
        let grantee = g
            .grantee
            .ok_or_else(|| AclError::Malformed("a Grant has no Grantee".into()))?;
        let grantee = match grantee.type_.as_str() {
            Type::CANONICAL_USER => acl::user(
                grantee.id.as_deref().ok_or_else(|| {
                    AclError::Malformed("a CanonicalUser grantee has no ID".into())
                })?,
                known,
            )?,
            Type::GROUP => acl::group(
                grantee
                    .uri
                    .as_deref()
                    .ok_or_else(|| AclError::Malformed("a Group grantee has no URI".into()))?,
            )?,
            Type::AMAZON_CUSTOMER_BY_EMAIL => return Err(AclError::Email),
            other => {
                return Err(AclError::Malformed(format!(
                    "unknown grantee type '{other}'"
                )));
            }
        };
        out.push(AclGrant {
            grantee,
            permission,
        });
    }
    Ok(out)
}

/// The grants a PutBucketAcl or PutObjectAcl sets: from its body or from its headers, not
/// both, and not neither.
async fn put_grants(
    gw: &Gateway,
    bucket: &str,
    body: Option<AccessControlPolicy>,
    headers: AclHeaders<'_>,
    extensions: &http::Extensions,
) -> RequestResult<Vec<AclGrant>> {
    let known = known_ids(extensions.get::<Caller>()).await?;
    let from_headers = headers.grants(&known)?;
    let grants = match (body, from_headers) {
        (Some(_), Some(_)) => {
            return Err(RequestError::InvalidRequest(
                "an ACL is given either in the body or in headers, not both".into(),
            ));
        }
        (Some(policy), None) => from_policy(policy, &known)?,
        (None, Some(grants)) => grants,
        (None, None) => {
            return Err(AclError::Malformed(
                "no ACL given: send x-amz-acl, x-amz-grant-* headers or an AccessControlPolicy"
                    .into(),
            )
            .into());
        }
    };
    refuse_public(gw, bucket, &grants)?;
    Ok(grants)
}

/// The grants as S3's XML has them.
fn to_dto(grants: &[AclGrant]) -> Vec<Grant> {
    grants
        .iter()
        .map(|g| {
            let grantee = match &g.grantee {
                AclGrantee::User(id) => Grantee {
                    display_name: Some(id.clone()),
                    id: Some(id.clone()),
                    type_: Type::from_static(Type::CANONICAL_USER),
                    email_address: None,
                    uri: None,
                },
                AclGrantee::AllUsers | AclGrantee::AuthenticatedUsers => Grantee {
                    display_name: None,
                    id: None,
                    type_: Type::from_static(Type::GROUP),
                    email_address: None,
                    uri: Some(
                        if g.grantee == AclGrantee::AllUsers {
                            acl::ALL_USERS
                        } else {
                            acl::AUTHENTICATED_USERS
                        }
                        .to_owned(),
                    ),
                },
            };
            Grant {
                grantee: Some(grantee),
                permission: Some(Permission::from_static(acl::permission_name(g.permission))),
            }
        })
        .collect()
}

/// Headers of an ACL request, by the names s3s gives their fields (object writes have no
/// `x-amz-grant-write`: WRITE means nothing on an object).
macro_rules! acl_headers {
    ($input:expr) => {
        $crate::access::acl::AclHeaders {
            write: $input.grant_write.as_deref(),
            ..$crate::s3::acl::acl_headers!(object $input)
        }
    };
    (object $input:expr) => {
        $crate::access::acl::AclHeaders {
            canned: $input.acl.as_ref().map(|a| a.as_str()),
            full_control: $input.grant_full_control.as_deref(),
            read: $input.grant_read.as_deref(),
            read_acp: $input.grant_read_acp.as_deref(),
            write: None,
            write_acp: $input.grant_write_acp.as_deref(),
        }
    };
}
pub(crate) use acl_headers;

/// PutBucketAcl: the bucket's grants, kept as its `acl` setting.
pub(crate) async fn put_bucket_acl(
    gw: &Gateway,
    req: S3Request<PutBucketAclInput>,
) -> RequestResult<S3Response<PutBucketAclOutput>> {
    let (input, ext) = (req.input, req.extensions);
    let body = input.access_control_policy.clone();
    let grants = put_grants(gw, &input.bucket, body, acl_headers!(input), &ext).await?;
    let doc = serde_json::to_vec(&grants).map_err(|e| RequestError::Internal(e.to_string()))?;
    let (store, bucket) = (gw.store.clone(), input.bucket);
    blocking(move || {
        store.bucket_fd(&bucket)?;
        store.settings().put(&bucket, Setting::Acl, &doc)
    })
    .await?;
    Ok(S3Response::new(PutBucketAclOutput::default()))
}

/// GetBucketAcl: the owner and the bucket's grants.
pub(crate) async fn get_bucket_acl(
    gw: &Gateway,
    req: S3Request<GetBucketAclInput>,
) -> RequestResult<S3Response<GetBucketAclOutput>> {
    let (store, bucket) = (gw.store.clone(), req.input.bucket);
    let grants = blocking(move || {
        store
            .bucket_fd(&bucket)
            .map(|_| crate::access::bucket_acl(&store, &bucket))
    })
    .await?;
    Ok(S3Response::new(GetBucketAclOutput {
        grants: Some(to_dto(&acl::or_private(grants))),
        owner: Some(owner()),
    }))
}

/// Keeps a new bucket's ACL (CreateBucket with `x-amz-acl` or `x-amz-grant-*`).
pub(crate) async fn set_new_bucket_acl(
    gw: &Gateway,
    bucket: &str,
    grants: Vec<AclGrant>,
) -> RequestResult<()> {
    let doc = serde_json::to_vec(&grants).map_err(|e| RequestError::Internal(e.to_string()))?;
    let (store, bucket) = (gw.store.clone(), bucket.to_owned());
    blocking(move || store.settings().put(&bucket, Setting::Acl, &doc)).await?;
    Ok(())
}

/// PutObjectAcl: the grants of one version (the current one unless `versionId` names
/// another), kept in its metadata.
pub(crate) async fn put_object_acl(
    gw: &Gateway,
    req: S3Request<PutObjectAclInput>,
) -> RequestResult<S3Response<PutObjectAclOutput>> {
    let (input, ext) = (req.input, req.extensions);
    let body = input.access_control_policy.clone();
    let grants = put_grants(gw, &input.bucket, body, acl_headers!(input), &ext).await?;
    let path = object_path(&input.key)?;
    let (store, bucket, version) = (gw.store.clone(), input.bucket, input.version_id);
    blocking(move || {
        store.update_version_meta(&bucket, &path, version.as_deref(), |m| {
            m.acl = Some(grants);
            Ok(())
        })
    })
    .await?;
    Ok(S3Response::new(PutObjectAclOutput::default()))
}

/// GetObjectAcl: the owner and the version's grants.
pub(crate) async fn get_object_acl(
    gw: &Gateway,
    req: S3Request<GetObjectAclInput>,
) -> RequestResult<S3Response<GetObjectAclOutput>> {
    let input = req.input;
    let path = object_path(&input.key)?;
    let by_id = input.version_id.is_some();
    let (store, bucket, version) = (gw.store.clone(), input.bucket, input.version_id);
    let found = blocking(move || store.open_version(&bucket, &path, version.as_deref())).await?;
    let grants = match found {
        Found::Object(h) => h.meta.acl,
        Found::DeleteMarker { version_id } => {
            return Err(RequestError::DeleteMarker { version_id, by_id });
        }
    };
    Ok(S3Response::new(GetObjectAclOutput {
        grants: Some(to_dto(&acl::or_private(grants))),
        owner: Some(owner()),
        ..Default::default()
    }))
}

/// S3 answers an ACL document that is not well-formed XML with MalformedACLError, where s3s
/// (which parses it before the gateway sees it) says MalformedXML: renames the code.
pub async fn finish(resp: http::Response<s3s::Body>) -> http::Response<s3s::Body> {
    if resp.status() != http::StatusCode::BAD_REQUEST {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if bytes
        .windows(25)
        .any(|w| w == b"<Code>MalformedXML</Code>".as_slice())
    {
        return super::xml_response(
            http::StatusCode::BAD_REQUEST,
            "MalformedACLError",
            &AclError::Malformed("the body is not an AccessControlPolicy document".into())
                .to_string(),
        );
    }
    http::Response::from_parts(parts, s3s::Body::from(bytes))
}
