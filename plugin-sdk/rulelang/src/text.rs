//! Text built from event fields: command lines as Falco and Sigma show
//! them, and image references split into repository, tag and digest.

/// `parts` joined with spaces (Sigma's `CommandLine`).
pub fn join<'s>(parts: impl Iterator<Item = &'s str>) -> String {
    let mut out = String::new();
    for (i, part) in parts.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

/// Falco's `proc.cmdline`: the process name, then the arguments.
pub fn falco_cmdline<'s>(name: &str, args: impl Iterator<Item = &'s str>) -> String {
    let mut out = name.to_string();
    for a in args {
        out.push(' ');
        out.push_str(a);
    }
    out
}

/// `registry:5000/team/app:1.2@sha256:ab` → (`registry:5000/team/app`, `1.2`, `sha256:ab`).
pub fn image_parts(image: &str) -> (&str, &str, &str) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, d),
        None => (image, ""),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(colon) => (&rest[..slash + colon], &rest[slash + colon + 1..], digest),
        None => (rest, "", digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split() {
        assert_eq!(image_parts("nginx"), ("nginx", "", ""));
        assert_eq!(image_parts("nginx:1.25"), ("nginx", "1.25", ""));
        assert_eq!(image_parts("reg:5000/team/app:1.2@sha256:ab"), ("reg:5000/team/app", "1.2", "sha256:ab"));
        assert_eq!(image_parts("reg:5000/team/app"), ("reg:5000/team/app", "", ""));
    }
}
