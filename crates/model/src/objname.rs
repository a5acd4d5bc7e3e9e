/// Names of images and kernels. They become folder names and URL path
/// segments, so they are restricted to a safe, readable alphabet:
/// 1-64 of `a-z A-Z 0-9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {name:?} is not valid: {why}")]
pub struct ObjectNameError {
    pub kind: &'static str,
    pub name: String,
    pub why: &'static str,
}

pub const MAX_OBJECT_NAME: usize = 64;

pub fn validate_object_name(kind: &'static str, name: &str) -> Result<(), ObjectNameError> {
    let err = |why| ObjectNameError {
        kind,
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > MAX_OBJECT_NAME {
        return Err(err("it is longer than 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(err("use only letters, digits, '.', '_' and '-'"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err("it must start with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for ok in [
            "debian-bookworm",
            "6.1.0-37-cloud-amd64",
            "my_image.v2",
            "A1",
        ] {
            validate_object_name("image", ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            let e = validate_object_name("image", bad).unwrap_err();
            assert!(e.to_string().starts_with("image name"), "{e}");
        }
    }
}
