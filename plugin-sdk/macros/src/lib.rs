//! The `#[rule]` attribute of the Vigil plugin SDK (re-exported as
//! `vigil_sdk::rule`; see that crate for the user documentation).
//!
//! It checks the function's signature (spanned compile errors), keeps the
//! function as written (so native tests call it directly), and emits an
//! implementation of `vigil_sdk::__private::Rule` plus the component exports.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, FnArg, ItemFn, LitStr, Pat, ReturnType, Type, parse_macro_input};

/// Declares a detection rule. See `vigil_sdk` for the user documentation.
#[proc_macro_attribute]
pub fn rule(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut args = RuleArgs::default();
    let parser = syn::meta::parser(|meta| args.parse(meta));
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(args, func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct RuleArgs {
    id: Option<LitStr>,
    version: Option<LitStr>,
    description: Option<LitStr>,
    subscribe: Option<ExprArray>,
    tags: Option<ExprArray>,
    containers_only: Option<syn::LitBool>,
    config: Option<Type>,
}

impl RuleArgs {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta) -> syn::Result<()> {
        let name = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        match name.as_str() {
            "id" => self.id = Some(meta.value()?.parse()?),
            "version" => self.version = Some(meta.value()?.parse()?),
            "description" => self.description = Some(meta.value()?.parse()?),
            "subscribe" => self.subscribe = Some(meta.value()?.parse()?),
            "tags" => self.tags = Some(meta.value()?.parse()?),
            "containers_only" => self.containers_only = Some(meta.value()?.parse()?),
            "config" => self.config = Some(meta.value()?.parse()?),
            _ => {
                return Err(meta.error(
                    "unknown rule argument; expected one of: id, version, description, subscribe, tags, containers_only, config",
                ));
            }
        }
        Ok(())
    }
}

fn expand(args: RuleArgs, func: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "a rule function cannot be async"));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(sig.generics.span(), "a rule function cannot be generic"));
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new(
            sig.span(),
            "a rule function returns its alerts: `Option<Alert>`, `Vec<Alert>` or `Alert`",
        ));
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let event_arg = |arg: &FnArg| -> syn::Result<()> {
        match arg {
            FnArg::Typed(t) => match &*t.ty {
                Type::Reference(r) if r.mutability.is_none() => Ok(()),
                other => {
                    Err(syn::Error::new(other.span(), "the event argument must be a shared reference: `event: &Event`"))
                }
            },
            FnArg::Receiver(r) => Err(syn::Error::new(r.span(), "a rule is a free function, not a method")),
        }
    };
    // The first of two arguments: `&mut State` (stateful) or, with
    // `config = T`, `&T` (a stateless rule with operator settings).
    let first_ref = |arg: &FnArg| -> syn::Result<(bool, TokenStream2, Span)> {
        match arg {
            FnArg::Typed(t) => match &*t.ty {
                Type::Reference(r) => Ok((r.mutability.is_some(), r.elem.to_token_stream(), t.ty.span())),
                other => Err(syn::Error::new(
                    other.span(),
                    "the first argument is a reference: `state: &mut MyState`, or `config: &MyConfig` with `config = MyConfig`",
                )),
            },
            FnArg::Receiver(r) => Err(syn::Error::new(r.span(), "a rule is a free function, not a method")),
        }
    };
    let (state_ty, call, stateful) = match (inputs.as_slice(), &args.config) {
        ([event], None) => {
            event_arg(event)?;
            (quote!(()), quote!(__vigil_user_fn(event)), false)
        }
        ([event], Some(ty)) => {
            event_arg(event)?;
            return Err(syn::Error::new(
                ty.span(),
                "a rule with `config = T` takes it first: `fn rule(config: &T, event: &Event)`",
            ));
        }
        ([first, event], config) => {
            event_arg(event)?;
            let (mutable, ty, span) = first_ref(first)?;
            match (mutable, config) {
                (true, None) => (ty, quote!(__vigil_user_fn(state, event)), true),
                (false, Some(config)) => (
                    quote!(::vigil_sdk::__private::Configured<#config>),
                    quote!(__vigil_user_fn(&state.0, event)),
                    false,
                ),
                (true, Some(config)) => {
                    return Err(syn::Error::new(
                        config.span(),
                        "`config = T` is for stateless rules (`config: &T`); a stateful rule reads its config in `State::init`",
                    ));
                }
                (false, None) => {
                    return Err(syn::Error::new(
                        span,
                        "the state argument must be a mutable reference: `state: &mut MyState` \
                         (or, for a rule's settings, `config: &MyConfig` with `config = MyConfig`)",
                    ));
                }
            }
        }
        _ => {
            return Err(syn::Error::new(
                sig.inputs.span(),
                "a rule takes `(event: &Event)`, `(config: &MyConfig, event: &Event)` with `config = MyConfig`, or `(state: &mut MyState, event: &Event)` to keep state",
            ));
        }
    };
    for arg in &sig.inputs {
        if let FnArg::Typed(t) = arg
            && !matches!(&*t.pat, Pat::Ident(_) | Pat::Wild(_))
        {
            return Err(syn::Error::new(t.pat.span(), "use a plain argument name"));
        }
    }

    // Type errors about the return type (not alerts) point at it.
    let ret_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.span(),
    };
    let push = quote_spanned!(ret_span=> ::vigil_sdk::IntoAlerts::push_into(#call, out));
    let fn_name = &sig.ident;
    let id = match &args.id {
        Some(id) => id.clone(),
        None => LitStr::new(&fn_name.to_string().replace('_', "-"), fn_name.span()),
    };
    if !valid_rule_id(&id.value()) {
        let why = if args.id.is_some() { "" } else { " (derived from the function's name; give `id = \"...\"`)" };
        return Err(syn::Error::new(
            id.span(),
            format!(
                "a rule id is lowercase words joined by `-`, at most {MAX_ID} bytes, e.g. \"shell-in-container\"{why}"
            ),
        ));
    }
    let version = match &args.version {
        Some(v) => v.to_token_stream(),
        None => quote!(env!("CARGO_PKG_VERSION")),
    };
    let description = match args.description {
        Some(d) => d,
        None => {
            let doc = doc_comment(&func);
            if doc.is_empty() {
                return Err(syn::Error::new(
                    sig.ident.span(),
                    "describe the rule: add a `///` doc comment or `description = \"...\"`",
                ));
            }
            LitStr::new(&doc, Span::call_site())
        }
    };
    let Some(subscribe) = args.subscribe else {
        return Err(syn::Error::new(Span::call_site(), "say which events the rule wants: `subscribe = [ProcessExec]`"));
    };
    if subscribe.elems.is_empty() {
        return Err(syn::Error::new(subscribe.span(), "subscribe to at least one event kind"));
    }
    let kinds = subscribe.elems.iter().map(|e| match e {
        Expr::Path(p) if p.path.get_ident().is_some() => {
            let ident = p.path.get_ident().unwrap();
            Ok(quote_spanned!(ident.span()=> ::vigil_sdk::EventKind::#ident))
        }
        other => Err(syn::Error::new(other.span(), "expected an event kind such as `ProcessExec` or `ContainerStart`")),
    });
    let kinds: Vec<TokenStream2> = kinds.collect::<syn::Result<_>>()?;
    let tags: Vec<&Expr> = args.tags.as_ref().map(|t| t.elems.iter().collect()).unwrap_or_default();
    let containers_only = args.containers_only.is_some_and(|b| b.value);

    // The rule as the daemon runs it, named after the function in CamelCase:
    // `testing::run(ShellInContainer, events)` honours its metadata.
    let rule_ty = syn::Ident::new(&camel_case(&fn_name.to_string()), fn_name.span());
    let vis = &func.vis;
    let rule_doc = format!(
        "The rule `{}` as the daemon runs it (metadata, subscriptions, config): pass it to `vigil_sdk::testing::run`.",
        id.value()
    );

    // The user's function stays as written; a private alias is called so the
    // generated code does not depend on the function's visibility.
    Ok(quote! {
        #func

        #[doc = #rule_doc]
        #[allow(dead_code)]
        #vis struct #rule_ty;

        const _: () = {
            use #fn_name as __vigil_user_fn;
            impl ::vigil_sdk::__private::Rule for #rule_ty {
                type State = #state_ty;
                const STATEFUL: bool = #stateful;
                const ID: &'static str = #id;
                const VERSION: &'static str = #version;
                const DESCRIPTION: &'static str = #description;
                const SUBSCRIPTIONS: &'static [::vigil_sdk::EventKind] = &[#(#kinds),*];
                const TAGS: &'static [&'static str] = &[#(#tags),*];
                const CONTAINERS_ONLY: bool = #containers_only;
                #[inline]
                #[allow(unused_variables)]
                fn handle(
                    state: &mut Self::State,
                    event: &::vigil_sdk::Event<'_>,
                    out: &mut ::std::vec::Vec<::vigil_sdk::Alert>,
                ) {
                    #push
                }
            }
        };

        ::vigil_sdk::__export_rule!(#rule_ty);
    })
}

/// Longest rule id, as the host checks it.
const MAX_ID: usize = 64;

/// The host's rule id rule: lowercase letters, digits and `-`, not at
/// either end, at most [`MAX_ID`] bytes.
fn valid_rule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// `shell_in_container` → `ShellInContainer`.
fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    for word in snake.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() { "Rule".into() } else { out }
}

fn doc_comment(func: &ItemFn) -> String {
    let mut lines = Vec::new();
    for attr in &func.attrs {
        if attr.path().is_ident("doc")
            && let syn::Meta::NameValue(nv) = &attr.meta
            && let Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value
        {
            lines.push(s.value().trim().to_string());
        }
    }
    // The first paragraph, joined into one line.
    lines.iter().take_while(|l| !l.is_empty()).cloned().collect::<Vec<_>>().join(" ")
}
