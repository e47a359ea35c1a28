//! Shell scripts split into the programs they run.

use super::*;

/// The simple commands of a shell script, as argv lists (redirections and
/// assignments removed; pipes, lists, subshells, `$(...)`, backquotes and
/// `<(...)` split into their own commands).
pub(crate) fn simple_commands(script: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut skip_next = false;
    let chars: Vec<char> = script.chars().collect();
    let mut i = 0;

    fn end_word(word: &mut String, in_word: &mut bool, words: &mut Vec<String>, skip_next: &mut bool) {
        if *in_word {
            if *skip_next {
                *skip_next = false;
            } else {
                words.push(std::mem::take(word));
            }
        }
        word.clear();
        *in_word = false;
    }
    fn end_command(words: &mut Vec<String>, commands: &mut Vec<Vec<String>>) {
        if !words.is_empty() {
            commands.push(std::mem::take(words));
        }
    }

    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() && matches!(chars[i + 1], '"' | '\\' | '$' | '`') {
                        i += 1;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '\\' => {
                in_word = true;
                if i + 1 < chars.len() {
                    i += 1;
                    word.push(chars[i]);
                }
            }
            c if c.is_whitespace() && c != '\n' => end_word(&mut word, &mut in_word, &mut words, &mut skip_next),
            '>' | '<' => {
                // An fd number written right before the operator belongs to it.
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                } else {
                    end_word(&mut word, &mut in_word, &mut words, &mut skip_next);
                }
                if c == '<' && chars.get(i + 1) == Some(&'(') {
                    // <( ... ): a command of its own.
                    end_command(&mut words, &mut commands);
                    i += 2;
                    continue;
                }
                i += 1;
                while i < chars.len() && matches!(chars[i], '>' | '<' | '&' | '|') {
                    i += 1;
                }
                while i < chars.len() && chars[i] == ' ' {
                    i += 1;
                }
                // The target word is skipped.
                skip_next = true;
                continue;
            }
            '&' if chars.get(i + 1) == Some(&'>') => {
                end_word(&mut word, &mut in_word, &mut words, &mut skip_next);
                i += 1;
                continue;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                end_word(&mut word, &mut in_word, &mut words, &mut skip_next);
                end_command(&mut words, &mut commands);
                i += 2;
                continue;
            }
            '|' | '&' | ';' | '\n' | '(' | ')' | '`' => {
                end_word(&mut word, &mut in_word, &mut words, &mut skip_next);
                end_command(&mut words, &mut commands);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    end_word(&mut word, &mut in_word, &mut words, &mut skip_next);
    end_command(&mut words, &mut commands);

    commands
        .into_iter()
        .filter_map(|mut argv| {
            loop {
                let first = argv.first()?;
                let assignment = first
                    .split_once('=')
                    .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                if assignment || KEYWORDS.contains(&first.as_str()) {
                    argv.remove(0);
                } else {
                    break;
                }
            }
            if matches!(argv.first()?.as_str(), "for" | "case" | "in" | "function") || argv[0].ends_with("()") {
                return None;
            }
            Some(argv)
        })
        .collect()
}

/// If `argv` is a shell given a command string, the script.
pub(crate) fn shell_script(argv: &[String]) -> Option<&str> {
    const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "zsh", "ksh"];
    if !SHELLS.contains(&basename(argv.first()?)) {
        return None;
    }
    let mut command_string = false;
    for a in &argv[1..] {
        if a.starts_with('-') && a.len() > 1 && !a.starts_with("--") {
            command_string |= a.contains('c');
        } else if a.starts_with("--") {
        } else {
            return command_string.then_some(a.as_str());
        }
    }
    None
}

/// Program wrappers and how many words of options/arguments they take
/// before the program they run (`None`: read options until a non-option).
pub(crate) fn wrapper_skip(argv: &[String]) -> Option<usize> {
    let name = basename(&argv[0]);
    let mut i = 1;
    let options = |i: &mut usize| {
        while *i < argv.len() && argv[*i].starts_with('-') {
            *i += 1;
        }
    };
    match name {
        "timeout" => {
            options(&mut i);
            i += 1; // the duration
        }
        "nohup" | "setsid" | "stdbuf" | "nice" | "ionice" | "sudo" | "chrt" | "taskset" => {
            options(&mut i);
            if matches!(name, "nice") && argv.get(1).is_some_and(|a| a == "-n") {
                i = 3;
            }
        }
        "env" => {
            options(&mut i);
            while i < argv.len() && argv[i].contains('=') {
                i += 1;
            }
        }
        _ => return None,
    }
    (i < argv.len()).then_some(i)
}
