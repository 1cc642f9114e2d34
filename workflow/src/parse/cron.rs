//! POSIX cron syntax as GitHub accepts it for `on.schedule`: five fields (minute, hour, day of
//! month, month, day of week), each `*`, a value, a range, a list, optionally with a `/step`;
//! months and weekdays may be written by name.

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        min: 0,
        max: 6,
        names: &WEEKDAYS,
    },
];

pub const INVALID_CRON: &str =
    "Invalid cron expression. Expected format: '* * * * *' (minute hour day month weekday)";

pub fn is_valid_cron(expression: &str) -> bool {
    let parts: Vec<&str> = expression.split_whitespace().collect();
    parts.len() == FIELDS.len()
        && parts
            .iter()
            .zip(FIELDS.iter())
            .all(|(part, field)| valid_field(part, field))
}

fn valid_field(part: &str, field: &Field) -> bool {
    part.split(',').all(|item| {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            if !step
                .parse::<u32>()
                .is_ok_and(|s| s >= 1 && s <= field.max.max(1))
            {
                return false;
            }
        }
        if range == "*" {
            return true;
        }
        match range.split_once('-') {
            Some((from, to)) => match (value(from, field), value(to, field)) {
                (Some(from), Some(to)) => from <= to,
                _ => false,
            },
            None => value(range, field).is_some(),
        }
    })
}

fn value(text: &str, field: &Field) -> Option<u32> {
    let number = match text.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let index = field
                .names
                .iter()
                .position(|name| name.eq_ignore_ascii_case(text))?;
            u32::try_from(index).ok()? + field.min
        }
    };
    (field.min..=field.max).contains(&number).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::is_valid_cron;

    #[test]
    fn accepts_and_rejects() {
        for ok in [
            "* * * * *",
            "0 3 * * 1-5",
            "*/15 0,12 1 JAN-MAR mon",
            "30 5 * * SUN",
            "0 0 1-15/2 * *",
        ] {
            assert!(is_valid_cron(ok), "{ok}");
        }
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7x",
            "*/0 * * * *",
            "5-1 * * * *",
            "@daily",
        ] {
            assert!(!is_valid_cron(bad), "{bad}");
        }
    }
}
