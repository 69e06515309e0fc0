-- money.sql: ISO 4217 currencies and money helpers.
--
-- Amounts are bigint minor units of the order currency; the exponent says
-- how many decimal places the minor unit has (USD 2, JPY 0, KWD 3).
--
-- requires: schema

INSERT INTO oms.currencies (code, exponent, name) VALUES
	('AED', 2, 'United Arab Emirates dirham'),
	('AFN', 2, 'Afghan afghani'),
	('ALL', 2, 'Albanian lek'),
	('AMD', 2, 'Armenian dram'),
	('ANG', 2, 'Netherlands Antillean guilder'),
	('AOA', 2, 'Angolan kwanza'),
	('ARS', 2, 'Argentine peso'),
	('AUD', 2, 'Australian dollar'),
	('AWG', 2, 'Aruban florin'),
	('AZN', 2, 'Azerbaijani manat'),
	('BAM', 2, 'Bosnia and Herzegovina convertible mark'),
	('BBD', 2, 'Barbados dollar'),
	('BDT', 2, 'Bangladeshi taka'),
	('BGN', 2, 'Bulgarian lev'),
	('BHD', 3, 'Bahraini dinar'),
	('BIF', 0, 'Burundian franc'),
	('BMD', 2, 'Bermudian dollar'),
	('BND', 2, 'Brunei dollar'),
	('BOB', 2, 'Boliviano'),
	('BRL', 2, 'Brazilian real'),
	('BSD', 2, 'Bahamian dollar'),
	('BTN', 2, 'Bhutanese ngultrum'),
	('BWP', 2, 'Botswana pula'),
	('BYN', 2, 'Belarusian ruble'),
	('BZD', 2, 'Belize dollar'),
	('CAD', 2, 'Canadian dollar'),
	('CDF', 2, 'Congolese franc'),
	('CHF', 2, 'Swiss franc'),
	('CLF', 4, 'Unidad de Fomento'),
	('CLP', 0, 'Chilean peso'),
	('CNY', 2, 'Renminbi'),
	('COP', 2, 'Colombian peso'),
	('CRC', 2, 'Costa Rican colon'),
	('CUP', 2, 'Cuban peso'),
	('CVE', 2, 'Cape Verdean escudo'),
	('CZK', 2, 'Czech koruna'),
	('DJF', 0, 'Djiboutian franc'),
	('DKK', 2, 'Danish krone'),
	('DOP', 2, 'Dominican peso'),
	('DZD', 2, 'Algerian dinar'),
	('EGP', 2, 'Egyptian pound'),
	('ERN', 2, 'Eritrean nakfa'),
	('ETB', 2, 'Ethiopian birr'),
	('EUR', 2, 'Euro'),
	('FJD', 2, 'Fiji dollar'),
	('FKP', 2, 'Falkland Islands pound'),
	('GBP', 2, 'Pound sterling'),
	('GEL', 2, 'Georgian lari'),
	('GHS', 2, 'Ghanaian cedi'),
	('GIP', 2, 'Gibraltar pound'),
	('GMD', 2, 'Gambian dalasi'),
	('GNF', 0, 'Guinean franc'),
	('GTQ', 2, 'Guatemalan quetzal'),
	('GYD', 2, 'Guyanese dollar'),
	('HKD', 2, 'Hong Kong dollar'),
	('HNL', 2, 'Honduran lempira'),
	('HTG', 2, 'Haitian gourde'),
	('HUF', 2, 'Hungarian forint'),
	('IDR', 2, 'Indonesian rupiah'),
	('ILS', 2, 'Israeli new shekel'),
	('INR', 2, 'Indian rupee'),
	('IQD', 3, 'Iraqi dinar'),
	('IRR', 2, 'Iranian rial'),
	('ISK', 0, 'Icelandic krona'),
	('JMD', 2, 'Jamaican dollar'),
	('JOD', 3, 'Jordanian dinar'),
	('JPY', 0, 'Japanese yen'),
	('KES', 2, 'Kenyan shilling'),
	('KGS', 2, 'Kyrgyzstani som'),
	('KHR', 2, 'Cambodian riel'),
	('KMF', 0, 'Comoro franc'),
	('KPW', 2, 'North Korean won'),
	('KRW', 0, 'South Korean won'),
	('KWD', 3, 'Kuwaiti dinar'),
	('KYD', 2, 'Cayman Islands dollar'),
	('KZT', 2, 'Kazakhstani tenge'),
	('LAK', 2, 'Lao kip'),
	('LBP', 2, 'Lebanese pound'),
	('LKR', 2, 'Sri Lankan rupee'),
	('LRD', 2, 'Liberian dollar'),
	('LSL', 2, 'Lesotho loti'),
	('LYD', 3, 'Libyan dinar'),
	('MAD', 2, 'Moroccan dirham'),
	('MDL', 2, 'Moldovan leu'),
	('MGA', 2, 'Malagasy ariary'),
	('MKD', 2, 'Macedonian denar'),
	('MMK', 2, 'Myanmar kyat'),
	('MNT', 2, 'Mongolian togrog'),
	('MOP', 2, 'Macanese pataca'),
	('MRU', 2, 'Mauritanian ouguiya'),
	('MUR', 2, 'Mauritian rupee'),
	('MVR', 2, 'Maldivian rufiyaa'),
	('MWK', 2, 'Malawian kwacha'),
	('MXN', 2, 'Mexican peso'),
	('MYR', 2, 'Malaysian ringgit'),
	('MZN', 2, 'Mozambican metical'),
	('NAD', 2, 'Namibian dollar'),
	('NGN', 2, 'Nigerian naira'),
	('NIO', 2, 'Nicaraguan cordoba'),
	('NOK', 2, 'Norwegian krone'),
	('NPR', 2, 'Nepalese rupee'),
	('NZD', 2, 'New Zealand dollar'),
	('OMR', 3, 'Omani rial'),
	('PAB', 2, 'Panamanian balboa'),
	('PEN', 2, 'Peruvian sol'),
	('PGK', 2, 'Papua New Guinean kina'),
	('PHP', 2, 'Philippine peso'),
	('PKR', 2, 'Pakistani rupee'),
	('PLN', 2, 'Polish zloty'),
	('PYG', 0, 'Paraguayan guarani'),
	('QAR', 2, 'Qatari riyal'),
	('RON', 2, 'Romanian leu'),
	('RSD', 2, 'Serbian dinar'),
	('RUB', 2, 'Russian ruble'),
	('RWF', 0, 'Rwandan franc'),
	('SAR', 2, 'Saudi riyal'),
	('SBD', 2, 'Solomon Islands dollar'),
	('SCR', 2, 'Seychelles rupee'),
	('SDG', 2, 'Sudanese pound'),
	('SEK', 2, 'Swedish krona'),
	('SGD', 2, 'Singapore dollar'),
	('SHP', 2, 'Saint Helena pound'),
	('SLE', 2, 'Sierra Leonean leone'),
	('SOS', 2, 'Somali shilling'),
	('SRD', 2, 'Surinamese dollar'),
	('SSP', 2, 'South Sudanese pound'),
	('STN', 2, 'Sao Tome and Principe dobra'),
	('SVC', 2, 'Salvadoran colon'),
	('SYP', 2, 'Syrian pound'),
	('SZL', 2, 'Swazi lilangeni'),
	('THB', 2, 'Thai baht'),
	('TJS', 2, 'Tajikistani somoni'),
	('TMT', 2, 'Turkmenistan manat'),
	('TND', 3, 'Tunisian dinar'),
	('TOP', 2, 'Tongan paanga'),
	('TRY', 2, 'Turkish lira'),
	('TTD', 2, 'Trinidad and Tobago dollar'),
	('TWD', 2, 'New Taiwan dollar'),
	('TZS', 2, 'Tanzanian shilling'),
	('UAH', 2, 'Ukrainian hryvnia'),
	('UGX', 0, 'Ugandan shilling'),
	('USD', 2, 'United States dollar'),
	('UYI', 0, 'Uruguay peso en unidades indexadas'),
	('UYU', 2, 'Uruguayan peso'),
	('UYW', 4, 'Unidad previsional'),
	('UZS', 2, 'Uzbekistan sum'),
	('VED', 2, 'Venezuelan digital bolivar'),
	('VES', 2, 'Venezuelan sovereign bolivar'),
	('VND', 0, 'Vietnamese dong'),
	('VUV', 0, 'Vanuatu vatu'),
	('WST', 2, 'Samoan tala'),
	('XAF', 0, 'CFA franc BEAC'),
	('XCD', 2, 'East Caribbean dollar'),
	('XOF', 0, 'CFA franc BCEAO'),
	('XPF', 0, 'CFP franc'),
	('YER', 2, 'Yemeni rial'),
	('ZAR', 2, 'South African rand'),
	('ZMW', 2, 'Zambian kwacha'),
	('ZWL', 2, 'Zimbabwean dollar');

CREATE FUNCTION oms._price_items(items jsonb)
RETURNS jsonb
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_price_items';
COMMENT ON FUNCTION oms._price_items(jsonb) IS
	'Validates an items array and returns it priced: line totals and the order total, overflow-checked';

CREATE FUNCTION oms._items_from_text(p_items text)
RETURNS jsonb
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_items_from_text';
COMMENT ON FUNCTION oms._items_from_text(text) IS
	'An items document given as JSON text, as jsonb, after refusing items that name a field twice (22023)';

-- Validates a currency code and returns its exponent.
CREATE FUNCTION oms._currency_exponent(p_currency text)
RETURNS smallint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_exponent smallint;
BEGIN
	IF p_currency IS NULL THEN
		RAISE EXCEPTION 'currency must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_currency !~ '^[A-Z]{3}$' THEN
		RAISE EXCEPTION 'invalid currency code "%"', p_currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A currency is an ISO 4217 code of three upper-case letters, such as USD.';
	END IF;
	SELECT c.exponent INTO v_exponent FROM oms.currencies AS c WHERE c.code = p_currency;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown currency "%"', p_currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The accepted currencies are listed in oms.currencies.';
	END IF;
	RETURN v_exponent;
END;
$$;
COMMENT ON FUNCTION oms._currency_exponent(text) IS
	'Checks an ISO 4217 code against oms.currencies and returns its minor-unit exponent';

CREATE FUNCTION @extschema@.oms_format_money(amount bigint, currency text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_exponent smallint := oms._currency_exponent(currency);
BEGIN
	IF amount IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN pg_catalog.round(amount::numeric / (10::numeric ^ v_exponent), v_exponent)::text || ' ' || currency;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_format_money(bigint, text) IS
	'Formats an amount in minor units for people, e.g. 1999 USD as 19.99 USD and 1999 JPY as 1999 JPY';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
REVOKE ALL ON FUNCTION @extschema@.oms_format_money(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._currency_exponent(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._items_from_text(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._price_items(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_format_money(bigint, text) TO oms_app;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_format_money(bigint, text),
	oms._currency_exponent(text)
TO oms_reader;
GRANT EXECUTE ON FUNCTION oms._currency_exponent(text) TO oms_app;
