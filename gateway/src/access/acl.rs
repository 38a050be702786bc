//! ACLs: what S3 clients send (canned ACLs, `x-amz-grant-*` headers, AccessControlPolicy
//! documents) turned into the grants kept with an object ([`ObjectMeta::acl`]) or as a
//! bucket's `acl` setting, and what those grants allow.
//!
//! Every bucket and object has one owner, the gateway's account ([`OWNER_ID`], reported the
//! same in ListBuckets, listings and every ACL), which the admin key acts as. A canonical user
//! grantee is an access key id of this gateway. AllUsers is everyone, AuthenticatedUsers every
//! valid key. As on S3, a grant allows: on a bucket, READ to list it, WRITE to put and delete
//! its objects; on an object, READ to get it; READ_ACP and WRITE_ACP to read and change the
//! ACL; FULL_CONTROL all of these.
//!
//! [`ObjectMeta::acl`]: crate::store::meta::ObjectMeta::acl

use crate::store::meta::{AclGrant, AclGrantee, AclPermission};

use super::Principal;

/// The canonical user id (and display name) of the owner of every bucket and object.
pub const OWNER_ID: &str = "nebula";

/// S3's group of everyone.
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// S3's group of every signed request.
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// Why an ACL is refused, in S3's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The document does not follow S3's schema (MalformedACLError).
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema: {0}"
    )]
    Malformed(String),
    /// A grantee or canned ACL this gateway cannot resolve (InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// A grantee named by e-mail address (UnresolvableGrantByEmailAddress).
    #[error("The e-mail address you provided does not match any account on record.")]
    Email,
    /// Both a canned ACL and grants (InvalidRequest).
    #[error("Specifying both Canned ACLs and Header Grants is not allowed")]
    Both,
}

/// The owner's full control, which a new bucket or object has.
fn owner_full_control() -> AclGrant {
    AclGrant {
        grantee: AclGrantee::User(OWNER_ID.to_owned()),
        permission: AclPermission::FullControl,
    }
}

/// The grants of a canned ACL (`x-amz-acl`). The `bucket-owner-*` ones are the owner's full
/// control, as the bucket's and the object's owner are the same here.
pub fn canned(name: &str) -> Result<Vec<AclGrant>, AclError> {
    let group = |grantee, permission| AclGrant {
        grantee,
        permission,
    };
    let mut grants = vec![owner_full_control()];
    match name {
        "private" | "bucket-owner-read" | "bucket-owner-full-control" => {}
        "public-read" => grants.push(group(AclGrantee::AllUsers, AclPermission::Read)),
        "public-read-write" => {
            grants.push(group(AclGrantee::AllUsers, AclPermission::Read));
            grants.push(group(AclGrantee::AllUsers, AclPermission::Write));
        }
        "authenticated-read" => {
            grants.push(group(AclGrantee::AuthenticatedUsers, AclPermission::Read));
        }
        other => {
            return Err(AclError::InvalidArgument(format!(
                "the canned ACL '{other}' is not supported (private, public-read, public-read-write, authenticated-read, bucket-owner-read, bucket-owner-full-control)"
            )));
        }
    }
    Ok(grants)
}

/// A permission by its S3 name.
pub fn permission(name: &str) -> Result<AclPermission, AclError> {
    Ok(match name {
        "FULL_CONTROL" => AclPermission::FullControl,
        "READ" => AclPermission::Read,
        "WRITE" => AclPermission::Write,
        "READ_ACP" => AclPermission::ReadAcp,
        "WRITE_ACP" => AclPermission::WriteAcp,
        other => return Err(AclError::Malformed(format!("unknown permission '{other}'"))),
    })
}

/// A permission's S3 name.
pub fn permission_name(p: AclPermission) -> &'static str {
    match p {
        AclPermission::FullControl => "FULL_CONTROL",
        AclPermission::Read => "READ",
        AclPermission::Write => "WRITE",
        AclPermission::ReadAcp => "READ_ACP",
        AclPermission::WriteAcp => "WRITE_ACP",
    }
}

/// A group grantee by its URI.
pub fn group(uri: &str) -> Result<AclGrantee, AclError> {
    match uri {
        ALL_USERS => Ok(AclGrantee::AllUsers),
        AUTHENTICATED_USERS => Ok(AclGrantee::AuthenticatedUsers),
        other => Err(AclError::InvalidArgument(format!(
            "Invalid group uri '{other}': only AllUsers and AuthenticatedUsers are supported"
        ))),
    }
}

/// A canonical user grantee, if `known` says the id is a key of this gateway (or the owner).
pub fn user(id: &str, known: &dyn Fn(&str) -> bool) -> Result<AclGrantee, AclError> {
    if id == OWNER_ID || known(id) {
        Ok(AclGrantee::User(id.to_owned()))
    } else {
        Err(AclError::InvalidArgument(format!("Invalid id '{id}'")))
    }
}

/// The grantees of one `x-amz-grant-*` header: `id="…"`, `uri="…"` or `emailAddress="…"`,
/// comma-separated.
fn header_grantees(value: &str, known: &dyn Fn(&str) -> bool) -> Result<Vec<AclGrantee>, AclError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || AclError::InvalidArgument(format!("Invalid grant '{item}'"));
        let (kind, v) = item.split_once('=').ok_or_else(bad)?;
        let v = v.trim().trim_matches('"');
        out.push(match kind.trim().to_ascii_lowercase().as_str() {
            "id" => user(v, known)?,
            "uri" => group(v)?,
            "emailaddress" => return Err(AclError::Email),
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

/// What a write or PutBucketAcl/PutObjectAcl says about the ACL in its headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct AclHeaders<'a> {
    /// `x-amz-acl`.
    pub canned: Option<&'a str>,
    /// `x-amz-grant-full-control`.
    pub full_control: Option<&'a str>,
    /// `x-amz-grant-read`.
    pub read: Option<&'a str>,
    /// `x-amz-grant-read-acp`.
    pub read_acp: Option<&'a str>,
    /// `x-amz-grant-write`.
    pub write: Option<&'a str>,
    /// `x-amz-grant-write-acp`.
    pub write_acp: Option<&'a str>,
}

impl AclHeaders<'_> {
    /// The grants the headers set, `None` when they set none. A canned ACL and grant headers
    /// together are refused, as S3 does; grants name the owner's full control too, which the
    /// owner keeps whatever the ACL says.
    pub fn grants(&self, known: &dyn Fn(&str) -> bool) -> Result<Option<Vec<AclGrant>>, AclError> {
        let explicit = [
            (self.full_control, AclPermission::FullControl),
            (self.read, AclPermission::Read),
            (self.read_acp, AclPermission::ReadAcp),
            (self.write, AclPermission::Write),
            (self.write_acp, AclPermission::WriteAcp),
        ];
        let any_grant = explicit.iter().any(|(v, _)| v.is_some());
        match (self.canned, any_grant) {
            (Some(_), true) => Err(AclError::Both),
            (Some(name), false) => canned(name).map(Some),
            (None, false) => Ok(None),
            (None, true) => {
                let mut grants = Vec::new();
                for (value, permission) in explicit {
                    for grantee in header_grantees(value.unwrap_or(""), known)? {
                        grants.push(AclGrant {
                            grantee,
                            permission,
                        });
                    }
                }
                Ok(Some(grants))
            }
        }
    }
}

/// True when a grant goes to everyone or to every key (S3's definition of a public ACL).
pub fn is_public(grants: &[AclGrant]) -> bool {
    grants.iter().any(|g| {
        matches!(
            g.grantee,
            AclGrantee::AllUsers | AclGrantee::AuthenticatedUsers
        )
    })
}

/// What an ACL is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The bucket's ACL.
    Bucket,
    /// The object's ACL.
    Object,
}

/// Which ACL, and which permission in it, allows the policy action `action` (see
/// `policy::iam_action`); `None` for the actions no ACL grants (the bucket's other settings).
pub fn needed(action: &str) -> Option<(Target, AclPermission)> {
    use AclPermission::*;
    Some(match action {
        "s3:ListBucket"
        | "s3:ListBucketVersions"
        | "s3:ListBucketMultipartUploads"
        | "s3:GetBucketLocation" => (Target::Bucket, Read),
        "s3:PutObject" | "s3:DeleteObject" | "s3:AbortMultipartUpload" => (Target::Bucket, Write),
        "s3:GetBucketAcl" => (Target::Bucket, ReadAcp),
        "s3:PutBucketAcl" => (Target::Bucket, WriteAcp),
        "s3:GetObject" | "s3:ListMultipartUploadParts" => (Target::Object, Read),
        "s3:GetObjectAcl" => (Target::Object, ReadAcp),
        "s3:PutObjectAcl" => (Target::Object, WriteAcp),
        _ => return None,
    })
}

/// True when `grants` give `who` the permission `wanted`. `ignore_public` (the bucket's
/// IgnorePublicAcls) leaves the AllUsers and AuthenticatedUsers grants out.
pub fn allows(
    grants: &[AclGrant],
    who: &Principal,
    wanted: AclPermission,
    ignore_public: bool,
) -> bool {
    grants.iter().any(|g| {
        let grantee = match &g.grantee {
            AclGrantee::AllUsers => !ignore_public,
            AclGrantee::AuthenticatedUsers => {
                !ignore_public && !matches!(who, Principal::Anonymous)
            }
            AclGrantee::User(id) => match who {
                Principal::Key(k) => k.stored.access_key_id == *id,
                Principal::Admin => id == OWNER_ID,
                Principal::Anonymous => false,
            },
        };
        grantee && (g.permission == wanted || g.permission == AclPermission::FullControl)
    })
}

/// The default ACL (the owner's full control) when none is kept.
pub fn or_private(grants: Option<Vec<AclGrant>>) -> Vec<AclGrant> {
    grants.unwrap_or_else(|| vec![owner_full_control()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_acls_and_headers() {
        let known = |id: &str| id == "NEBFRIEND";
        assert!(is_public(&canned("public-read").unwrap()));
        assert!(is_public(&canned("authenticated-read").unwrap()));
        assert!(!is_public(&canned("private").unwrap()));
        assert!(matches!(
            canned("log-delivery-write"),
            Err(AclError::InvalidArgument(_))
        ));
        let h = AclHeaders {
            read: Some(
                r#"id="NEBFRIEND", uri="http://acs.amazonaws.com/groups/global/AuthenticatedUsers""#,
            ),
            write_acp: Some("id=nebula"),
            ..Default::default()
        };
        let g = h.grants(&known).unwrap().unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].grantee, AclGrantee::User("NEBFRIEND".into()));
        assert_eq!(g[1].grantee, AclGrantee::AuthenticatedUsers);
        assert_eq!(g[2].permission, AclPermission::WriteAcp);
        let unknown = AclHeaders {
            read: Some(r#"id="NEBNOBODY""#),
            ..Default::default()
        };
        assert!(matches!(
            unknown.grants(&known),
            Err(AclError::InvalidArgument(_))
        ));
        let both = AclHeaders {
            canned: Some("private"),
            read: Some("id=nebula"),
            ..Default::default()
        };
        assert_eq!(both.grants(&known), Err(AclError::Both));
        let email = AclHeaders {
            read: Some(r#"emailAddress="a@b.c""#),
            ..Default::default()
        };
        assert_eq!(email.grants(&known), Err(AclError::Email));
        assert_eq!(AclHeaders::default().grants(&known), Ok(None));
    }

    #[test]
    fn grants_allow_what_s3_says() {
        let public = canned("public-read").unwrap();
        let anon = Principal::Anonymous;
        assert!(allows(&public, &anon, AclPermission::Read, false));
        assert!(!allows(&public, &anon, AclPermission::Read, true));
        assert!(!allows(&public, &anon, AclPermission::Write, false));
        let auth = canned("authenticated-read").unwrap();
        assert!(!allows(&auth, &anon, AclPermission::Read, false));
        assert!(allows(&auth, &Principal::Admin, AclPermission::Read, false));
        assert_eq!(
            needed("s3:GetObject"),
            Some((Target::Object, AclPermission::Read))
        );
        assert_eq!(
            needed("s3:PutObject"),
            Some((Target::Bucket, AclPermission::Write))
        );
        assert_eq!(needed("s3:PutBucketPolicy"), None);
    }
}
