//! The page around each view: navigation, the embedded style and the live-update script.

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `content` in `<main>`, which the script fetches again when a change of
/// `topic` (apps, audit, rollouts) is announced.
pub fn page(title: &str, topic: &str, content: &str) -> String {
    let nav = [
        ("/", "Apps"),
        ("/audit", "Audit"),
        ("/rollouts", "Rollouts"),
    ]
    .iter()
    .map(|(href, label)| format!("<a href=\"{href}\">{label}</a>"))
    .collect::<Vec<_>>()
    .join("");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title} · kubectl gitops</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body><a class=\"skip\" href=\"#live\">Skip to content</a>\
         <header><strong>kubectl gitops</strong><nav aria-label=\"pages\">{nav}</nav>\
         <span id=\"connection\" role=\"status\" aria-live=\"polite\"></span></header>\
         <main id=\"live\" data-topic=\"{topic}\" aria-live=\"polite\">{content}</main>\
         <script src=\"/assets/live.js\"></script></body></html>",
        title = esc(title),
        topic = esc(topic),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_and_messages_is_text() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
