//! Turns a validated prompt (raw text or chat messages) into tokens with the model's own
//! tokenizer and chat template. Runs on tokio's blocking pool, not on the engine thread, so a
//! long prompt never stalls a decode step.

use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::ChatTemplateError;

use crate::validation::{PromptInput, RequestError, ValidationError};

pub(super) fn tokenize_prompt(
    model: &LlamaModel,
    input: &PromptInput,
) -> Result<Vec<LlamaToken>, ValidationError> {
    let vocab = model.vocab();
    let text = match input {
        PromptInput::Text(text) => text.clone(),
        PromptInput::Chat(messages) => render_chat(model, messages)?,
    };
    // `parse_special` as llama.cpp's server does: a client that formats its own prompt
    // (`<start_of_turn>user ...`) gets the control tokens it wrote.
    let mut tokens = vocab.tokenize(text.as_bytes(), true, true);
    // Templates that write the BOS text themselves would otherwise start with two of them.
    if tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
        tokens.remove(0);
    }
    Ok(tokens)
}

fn render_chat(
    model: &LlamaModel,
    messages: &[llorch_api::ChatMessage],
) -> Result<String, ValidationError> {
    // A base model has no template; guessing one would make it continue a format it never
    // learned, so the client is told to send a raw prompt instead.
    let template = model.chat_template(None).map_err(|error| match error {
        ChatTemplateError::MissingTemplate => ValidationError::NoChatTemplate,
        other => ValidationError::ChatTemplate(other.to_string()),
    })?;
    let messages = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            LlamaChatMessage::new(message.role.clone(), message.content.clone())
                .map_err(|_| RequestError::NulInMessage { index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    model
        .apply_chat_template(&template, &messages, true)
        .map_err(|error| ValidationError::ChatTemplate(error.to_string()))
}
