//! Compiles `src/arrow_insert.cpp` and `src/bound_schema.cpp` against the headers of the DuckDB that
//! libduckdb-sys bundles and links into this crate (see those files for why).

fn main() {
    let include = std::env::var("DEP_DUCKDB_INCLUDE")
        .expect("libduckdb-sys (bundled) publishes DuckDB's include directory");
    let mut build = cc::Build::new();
    // The same one of DEBUG / NDEBUG that libduckdb-sys compiles DuckDB with:
    // some of DuckDB's classes differ between the two.
    let debug = std::env::var("DEBUG").is_ok_and(|v| v != "false" && v != "0");
    if debug {
        build.define("DEBUG", None);
    } else {
        build.define("NDEBUG", None);
    }
    build
        .cpp(true)
        .std("c++17")
        .include(include)
        .file("src/arrow_insert.cpp")
        .file("src/bound_schema.cpp")
        .warnings(false)
        .flag_if_supported("-w")
        .compile("mallard_arrow_insert");
    println!("cargo:rerun-if-changed=src/arrow_insert.cpp");
    println!("cargo:rerun-if-changed=src/bound_schema.cpp");
    println!("cargo:rerun-if-changed=src/shim_message.hpp");
}
