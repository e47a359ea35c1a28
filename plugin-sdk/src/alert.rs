//! What a rule returns.

pub use vigil_event::Priority;

/// An alert raised by a rule about the event it was called with. The daemon
/// adds the rule id, the time and the event's context (command line, user,
/// container, pod) to what the rule sets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// How severe.
    pub priority: Priority,
    /// One line for a human.
    pub message: String,
    /// Tags, e.g. `container`, `T1059` (MITRE ATT&CK).
    pub tags: Vec<String>,
    /// Extra output fields.
    pub fields: Vec<(String, String)>,
}

impl Alert {
    /// An alert of `priority`.
    pub fn new(priority: Priority, message: impl Into<String>) -> Self {
        Alert { priority, message: message.into(), tags: Vec::new(), fields: Vec::new() }
    }
    /// A critical alert.
    pub fn critical(message: impl Into<String>) -> Self {
        Self::new(Priority::Critical, message)
    }
    /// An error alert.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Priority::Error, message)
    }
    /// A warning alert.
    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Priority::Warning, message)
    }
    /// A notice alert.
    pub fn notice(message: impl Into<String>) -> Self {
        Self::new(Priority::Notice, message)
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Adds tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }
    /// Adds an output field.
    pub fn field(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.fields.push((key.into(), value.to_string()));
        self
    }
    /// True when the alert has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// What a rule function may return: zero or more alerts.
pub trait IntoAlerts {
    /// Appends the alerts to `out`.
    fn push_into(self, out: &mut Vec<Alert>);
}

impl IntoAlerts for Alert {
    fn push_into(self, out: &mut Vec<Alert>) {
        out.push(self)
    }
}

impl IntoAlerts for Option<Alert> {
    fn push_into(self, out: &mut Vec<Alert>) {
        out.extend(self)
    }
}

impl IntoAlerts for Vec<Alert> {
    fn push_into(mut self, out: &mut Vec<Alert>) {
        out.append(&mut self)
    }
}
