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
            _ => {
                return Err(meta.error(
                    "unknown rule argument; expected one of: id, version, description, subscribe, tags, containers_only",
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
    let (state_ty, call) = match inputs.as_slice() {
        [event] => {
            event_arg(event)?;
            (quote!(()), quote!(__vigil_user_fn(event)))
        }
        [state, event] => {
            event_arg(event)?;
            let ty = match state {
                FnArg::Typed(t) => match &*t.ty {
                    Type::Reference(r) if r.mutability.is_some() => r.elem.to_token_stream(),
                    other => {
                        return Err(syn::Error::new(
                            other.span(),
                            "the state argument must be a mutable reference: `state: &mut MyState`",
                        ));
                    }
                },
                FnArg::Receiver(r) => {
                    return Err(syn::Error::new(r.span(), "a rule is a free function, not a method"));
                }
            };
            (ty, quote!(__vigil_user_fn(state, event)))
        }
        _ => {
            return Err(syn::Error::new(
                sig.inputs.span(),
                "a rule takes `(event: &Event)`, or `(state: &mut State, event: &Event)` to keep state",
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
        Some(id) => {
            let v = id.value();
            let ok = !v.is_empty()
                && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !v.starts_with('-')
                && !v.ends_with('-');
            if !ok {
                return Err(syn::Error::new(
                    id.span(),
                    "a rule id is lowercase words joined by `-`, e.g. \"shell-in-container\"",
                ));
            }
            id.clone()
        }
        None => LitStr::new(&fn_name.to_string().replace('_', "-"), fn_name.span()),
    };
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

    // The user's function stays as written; a private alias is called so the
    // generated code does not depend on the function's visibility.
    Ok(quote! {
        #func

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        pub struct __VigilRule;

        const _: () = {
            use #fn_name as __vigil_user_fn;
            impl ::vigil_sdk::__private::Rule for __VigilRule {
                type State = #state_ty;
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

        ::vigil_sdk::__export_rule!(__VigilRule);
    })
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
