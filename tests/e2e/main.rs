mod selector_differential;
