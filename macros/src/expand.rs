//! Code generation of the `Object` implementation: type name, method table (wire names,
//! request and response full names, idempotence), message descriptors, constructor, dispatch,
//! hooks, and one `Send` check per method placed at the user's code.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, LitStr, Path};

use crate::args::ObjectArgs;
use crate::model::{Method, ObjectModel};

/// Paths generated code may name, all under `#krate::__private`.
pub(crate) struct Paths {
    private: TokenStream,
}

impl Paths {
    pub(crate) fn new(krate: &Path) -> Self {
        Paths { private: quote!(#krate::__private) }
    }

    pub(crate) fn item(&self, name: &str) -> TokenStream {
        let private = &self.private;
        let ident = Ident::new(name, proc_macro2::Span::call_site());
        quote!(#private::#ident)
    }
}

/// The object type name: the `name = "…"` argument or the struct's name.
pub(crate) fn type_name(args: &ObjectArgs, model: &ObjectModel) -> LitStr {
    args.type_name.clone().unwrap_or_else(|| {
        LitStr::new(&model.struct_ident.unraw().to_string(), model.struct_ident.span())
    })
}

/// `impl Object for Type { … }` plus the per-method `Send` checks.
pub(crate) fn object_impl(
    args: &ObjectArgs,
    model: &ObjectModel,
    ref_ident: &Ident,
) -> TokenStream {
    let paths = Paths::new(&args.krate);
    let object = paths.item("Object");
    let method_info = paths.item("MethodInfo");
    let call_context = paths.item("CallContext");
    let payload = paths.item("Payload");
    let turn_future = paths.item("TurnFuture");
    let prost = paths.item("prost");
    let self_ty = &model.self_ty;
    let type_name = type_name(args, model);

    let infos = model.methods.iter().map(|method| {
        let Method { wire_name, request, response, idempotent, .. } = method;
        quote! {
            #method_info {
                name: #wire_name,
                request_type: <#request as #prost::Name>::full_name(),
                response_type: <#response as #prost::Name>::full_name(),
                idempotent: #idempotent,
            }
        }
    });

    let (state_ty, has_state) = match &model.hooks.snapshot {
        Some((_, state)) => (quote!(#state), true),
        None => (quote!(()), false),
    };
    let construct = match &model.hooks.init {
        Some(init) => quote!(<#self_ty>::#init(id)),
        None => {
            // Spanned at the type so a missing `Default` is reported there.
            quote_spanned!(self_ty.span()=> { let _ = id; <#self_ty as ::core::default::Default>::default() })
        }
    };
    // The type's message descriptors, when given (the trait's default is none).
    let descriptors = args.descriptors.as_ref().map(|expr| {
        quote_spanned! {expr.span()=>
            fn file_descriptor_set() -> &'static [u8] {
                #expr
            }
        }
    });
    let dispatch = dispatch(&paths, model, &type_name);
    let hooks = hooks(&paths, model);
    let send_checks = model.methods.iter().map(|method| send_check(&paths, model, method));

    quote! {
        impl #object for #self_ty {
            const TYPE_NAME: &'static str = #type_name;
            const HAS_STATE: bool = #has_state;
            type State = #state_ty;
            type Ref = #ref_ident;

            fn methods() -> &'static [#method_info] {
                static METHODS: ::std::sync::OnceLock<::std::vec::Vec<#method_info>> =
                    ::std::sync::OnceLock::new();
                METHODS.get_or_init(|| ::std::vec![#(#infos),*])
            }

            #descriptors

            fn construct(id: &str) -> Self {
                #construct
            }

            fn dispatch<'a>(
                &'a mut self,
                ctx: &'a #call_context,
                method: usize,
                request: #payload,
            ) -> #turn_future<'a> {
                #dispatch
            }

            #hooks
        }

        #(#send_checks)*
    }
}

fn dispatch(paths: &Paths, model: &ObjectModel, type_name: &LitStr) -> TokenStream {
    let payload = paths.item("Payload");
    let call_error = paths.item("CallError");
    let method_error = paths.item("method_error");
    let self_ty = &model.self_ty;
    let unknown = quote! {
        ::std::boxed::Box::pin(async move {
            ::std::result::Result::Err(#call_error::UnknownMethod {
                object_type: ::std::string::ToString::to_string(#type_name),
                method: ::std::format!("#{}", method),
            })
        })
    };
    if model.methods.is_empty() {
        return quote! { let _ = (ctx, request); #unknown };
    }
    let arms = model.methods.iter().enumerate().map(|(index, method)| {
        let index = Literal::usize_suffixed(index);
        let Method { ident, request: request_ty, .. } = method;
        // Spanned at the user's method: a non-`Send` future is reported there (as well as by
        // the method's `Send` check).
        quote_spanned! {ident.span()=>
            #index => ::std::boxed::Box::pin(async move {
                let request = #payload::into_message::<#request_ty>(request)?;
                let response = <#self_ty>::#ident(self, ctx, request)
                    .await
                    .map_err(#method_error)?;
                ::std::result::Result::<#payload, #call_error>::Ok(#payload::typed(response))
            }),
        }
    });
    quote! {
        match method {
            #(#arms)*
            _ => #unknown,
        }
    }
}

fn hooks(paths: &Paths, model: &ObjectModel) -> TokenStream {
    let call_context = paths.item("CallContext");
    let hook_future = paths.item("HookFuture");
    let method_error = paths.item("method_error");
    let self_ty = &model.self_ty;
    let mut tokens = TokenStream::new();
    let lifecycle = [
        (quote!(on_activate), &model.hooks.on_activate),
        (quote!(on_deactivate), &model.hooks.on_deactivate),
    ];
    for (trait_fn, user_fn) in lifecycle {
        let Some(user_fn) = user_fn else { continue };
        let boxed = quote_spanned! {user_fn.span()=>
            ::std::boxed::Box::pin(async move {
                <#self_ty>::#user_fn(self, ctx).await.map_err(#method_error)
            })
        };
        tokens.extend(quote! {
            fn #trait_fn<'a>(&'a mut self, ctx: &'a #call_context) -> #hook_future<'a> {
                #boxed
            }
        });
    }
    if let (Some((snapshot, _)), Some(restore)) = (&model.hooks.snapshot, &model.hooks.restore) {
        tokens.extend(quote! {
            fn snapshot(&self) -> Self::State {
                <#self_ty>::#snapshot(self)
            }

            fn restore(&mut self, state: Self::State) {
                <#self_ty>::#restore(self, state)
            }
        });
    }
    tokens
}

/// A function that never runs but makes the compiler prove the method's future is `Send`,
/// spanned at the method's name so the error points at the user's code.
fn send_check(paths: &Paths, model: &ObjectModel, method: &Method) -> TokenStream {
    let call_context = paths.item("CallContext");
    let self_ty = &model.self_ty;
    let Method { ident, request, .. } = method;
    quote_spanned! {ident.span()=>
        const _: () = {
            #[allow(dead_code)]
            fn __verse_send_check(this: &mut #self_ty, ctx: &#call_context, request: #request) {
                fn __verse_assert_send<T: ::core::marker::Send>(_: &T) {}
                let future = <#self_ty>::#ident(this, ctx, request);
                __verse_assert_send(&future);
            }
        };
    }
}
