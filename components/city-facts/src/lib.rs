//! `city-facts`: a tool component with the population of a few large
//! cities, for agents' models to call (`population`, `cities`, `compare`).
//!
//! The figures count the city proper (the municipality) and come from:
//!
//! | city        | population | year | source |
//! |-------------|-----------:|-----:|--------|
//! | Paris       |  2 133 111 | 2021 | INSEE, populations légales |
//! | Marseille   |    873 076 | 2021 | INSEE, populations légales |
//! | Lyon        |    522 250 | 2020 | INSEE, populations légales |
//! | Toulouse    |    504 078 | 2021 | INSEE, populations légales |
//! | Nice        |    348 085 | 2021 | INSEE, populations légales |
//! | Berlin      |  3 755 251 | 2022 | Amt für Statistik Berlin-Brandenburg |
//! | Tokyo       | 13 960 000 | 2023 | Tokyo Metropolitan Government (the Metropolis) |
//! | Osaka       |  2 752 412 | 2020 | 2020 census of Japan |
//! | London      |  8 799 800 | 2021 | Census 2021, ONS (Greater London) |
//! | New York    |  8 804 190 | 2020 | 2020 United States census |
//! | Los Angeles |  3 898 747 | 2020 | 2020 United States census |
//! | Chicago     |  2 746 388 | 2020 | 2020 United States census |
//! | Toronto     |  2 794 356 | 2021 | 2021 census of Canada |
//! | Montreal    |  1 762 949 | 2021 | 2021 census of Canada |
//!
//! Names are matched without regard to case, accents, spaces or
//! punctuation, and a few common other names are known (`NYC`, `Montréal`,
//! `USA`, `UK`, …).

wit_bindgen::generate!({
    world: "city-facts",
    path: "wit",
});

/// The component's single implementation type.
struct Component;

/// One city of the table.
struct City {
    name: &'static str,
    /// Other names it is asked for by.
    aliases: &'static [&'static str],
    country: &'static str,
    population: u64,
    year: u32,
}

/// The cities it knows, one a line.
#[rustfmt::skip]
const CITIES: &[City] = &[
    City { name: "Paris", aliases: &[], country: "France", population: 2_133_111, year: 2021 },
    City { name: "Marseille", aliases: &["Marseilles"], country: "France", population: 873_076, year: 2021 },
    City { name: "Lyon", aliases: &["Lyons"], country: "France", population: 522_250, year: 2020 },
    City { name: "Toulouse", aliases: &[], country: "France", population: 504_078, year: 2021 },
    City { name: "Nice", aliases: &[], country: "France", population: 348_085, year: 2021 },
    City { name: "Berlin", aliases: &[], country: "Germany", population: 3_755_251, year: 2022 },
    City { name: "Tokyo", aliases: &["Tokyo Metropolis"], country: "Japan", population: 13_960_000, year: 2023 },
    City { name: "Osaka", aliases: &[], country: "Japan", population: 2_752_412, year: 2020 },
    City { name: "London", aliases: &["Greater London"], country: "United Kingdom", population: 8_799_800, year: 2021 },
    City { name: "New York", aliases: &["New York City", "NYC"], country: "United States", population: 8_804_190, year: 2020 },
    City { name: "Los Angeles", aliases: &[], country: "United States", population: 3_898_747, year: 2020 },
    City { name: "Chicago", aliases: &[], country: "United States", population: 2_746_388, year: 2020 },
    City { name: "Toronto", aliases: &[], country: "Canada", population: 2_794_356, year: 2021 },
    City { name: "Montreal", aliases: &[], country: "Canada", population: 1_762_949, year: 2021 },
];

/// Other names of the countries, as `(alias, country)`.
const COUNTRY_ALIASES: &[(&str, &str)] = &[
    ("USA", "United States"),
    ("US", "United States"),
    ("United States of America", "United States"),
    ("America", "United States"),
    ("UK", "United Kingdom"),
    ("Great Britain", "United Kingdom"),
    ("Britain", "United Kingdom"),
    ("England", "United Kingdom"),
    ("Deutschland", "Germany"),
];

/// `name` reduced for matching: lower case, Latin accents removed, only
/// letters and digits kept (`Montréal` and `montreal` match, and so do
/// `New-York` and `new york`).
fn key(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ä' | 'ã' | 'å' | 'ā' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' | 'ē' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'ö' | 'õ' | 'ō' => 'o',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
            'ÿ' | 'ý' => 'y',
            other => other,
        })
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The names of all known cities, alphabetically.
fn known_names() -> Vec<String> {
    let mut names: Vec<String> = CITIES.iter().map(|c| c.name.to_string()).collect();
    names.sort();
    names
}

fn find(city: &str) -> Result<&'static City, String> {
    let wanted = key(city);
    CITIES
        .iter()
        .find(|c| key(c.name) == wanted || c.aliases.iter().any(|a| key(a) == wanted))
        .ok_or_else(|| {
            format!(
                "unknown city `{}`; known cities: {}",
                city.trim(),
                known_names().join(", ")
            )
        })
}

fn record(city: &City) -> CityPopulation {
    CityPopulation {
        city: city.name.to_string(),
        country: city.country.to_string(),
        population: city.population,
        year: city.year,
    }
}

impl Guest for Component {
    fn population(city: String) -> Result<CityPopulation, String> {
        find(&city).map(record)
    }

    fn cities(country: Option<String>) -> Vec<String> {
        let Some(country) = country else {
            return known_names();
        };
        let wanted = key(&country);
        let wanted = COUNTRY_ALIASES
            .iter()
            .find(|(alias, _)| key(alias) == wanted)
            .map_or(wanted, |(_, country)| key(country));
        let mut names: Vec<String> = CITIES
            .iter()
            .filter(|c| key(c.country) == wanted)
            .map(|c| c.name.to_string())
            .collect();
        names.sort();
        names
    }

    fn compare(a: String, b: String) -> Result<Comparison, String> {
        let (a, b) = (find(&a)?, find(&b)?);
        Ok(Comparison {
            a: record(a),
            b: record(b),
            // Populations are far below 2^53: the conversions are exact.
            ratio: a.population as f64 / b.population as f64,
        })
    }
}

export!(Component);
