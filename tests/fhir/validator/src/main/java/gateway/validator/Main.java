package gateway.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.ConceptValidationOptions;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.context.support.ValidationSupportContext;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.ValueSet;

/**
 * The HL7 FHIR R4 instance validator (HAPI FHIR) as a JSON-lines filter, offline.
 *
 * <p>Arguments: folders of conformance resources (JSON) to load (StructureDefinition,
 * CodeSystem, ValueSet, ConceptMap, SearchParameter). Then each line on stdin is one FHIR
 * resource (JSON on one line); each answer on stdout is one line:
 * {"issues":[{"severity":"error","location":"...","message":"..."}]}. A line "" ends.
 *
 * <p>No terminology server is used. Code systems that exist but are too large or licensed to
 * ship (SNOMED CT, LOINC, DICOM DCM, UCUM, ...; see OFFLINE) are "supported" by {@link
 * OfflineCodeSystems}: a code from them is reported as information ("not checked offline")
 * instead of an error. Every other code system must be known (FHIR core, HL7 terminology
 * shipped with the validator, or ours): an unknown one is reported by the validator as usual.
 */
public final class Main {
  /** External code systems that exist but cannot be loaded offline. */
  static final Set<String> OFFLINE =
      Set.of(
          "http://snomed.info/sct",
          "http://loinc.org",
          "http://dicom.nema.org/resources/ontology/DCM",
          "http://unitsofmeasure.org",
          "urn:ietf:bcp:47",
          "urn:ietf:bcp:13",
          "http://www.nlm.nih.gov/research/umls/rxnorm",
          "http://hl7.org/fhir/sid/icd-10",
          "http://hl7.org/fhir/sid/icd-o-3",
          "http://publications.europa.eu/resource/authority/access-right");

  private Main() {}

  public static void main(String[] args) throws IOException {
    FhirContext ctx = FhirContext.forR4();
    PrePopulatedValidationSupport ours = new PrePopulatedValidationSupport(ctx);
    IParser parser = ctx.newJsonParser();
    int loaded = 0;
    for (String folder : args) {
      try (Stream<Path> files = Files.list(Path.of(folder))) {
        for (Path file : files.filter(f -> f.toString().endsWith(".json")).sorted().toList()) {
          IBaseResource resource = parser.parseResource(Files.readString(file));
          ours.addResource(resource);
          loaded++;
        }
      }
    }
    ValidationSupportChain chain =
        new ValidationSupportChain(
            new DefaultProfileValidationSupport(ctx),
            ours,
            new OfflineCodeSystems(ctx),
            new CommonCodeSystemsTerminologyService(ctx),
            new InMemoryTerminologyServerValidationSupport(ctx),
            new SnapshotGeneratingValidationSupport(ctx));
    FhirInstanceValidator module = new FhirInstanceValidator(chain);
    module.setAnyExtensionsAllowed(false);
    FhirValidator validator = ctx.newValidator().registerValidatorModule(module);

    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    out.println("{\"ready\":true,\"loaded\":" + loaded + "}");
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null && !line.isEmpty()) {
      out.println(answer(validator, line));
    }
  }

  static String answer(FhirValidator validator, String line) {
    List<String> issues = new ArrayList<>();
    try {
      ValidationResult result = validator.validateWithResult(line);
      for (SingleValidationMessage m : result.getMessages()) {
        String severity = m.getSeverity().getCode();
        if (offlineArtifact(m)) {
          severity = "information";
        }
        issues.add(
            "{\"severity\":"
                + quote(severity)
                + ",\"location\":"
                + quote(m.getLocationString())
                + ",\"message\":"
                + quote(m.getMessage())
                + ",\"id\":"
                + quote(m.getMessageId())
                + "}");
      }
    } catch (RuntimeException e) {
      issues.add(
          "{\"severity\":\"fatal\",\"location\":\"\",\"message\":"
              + quote(e.getClass().getSimpleName() + ": " + e.getMessage())
              + ",\"id\":\"\"}");
    }
    return "{\"issues\":[" + String.join(",", issues) + "]}";
  }

  /**
   * The validator's self-check of an extension StructureDefinition regenerates its snapshot
   * through an NPM package lookup ("hl7.fhir.r4.core#null") that the offline, package-less
   * HAPI context cannot answer. The same definitions are snapshotted by
   * SnapshotGeneratingValidationSupport and used to validate every instance of the extension,
   * so this one message says nothing about the definition: it is reported as information.
   */
  static boolean offlineArtifact(SingleValidationMessage m) {
    return "ERROR_GENERATING_SNAPSHOT".equals(m.getMessageId())
        && m.getMessage() != null
        && m.getMessage().contains("Unable to resolve package id hl7.fhir.r4.core#null");
  }

  static String quote(String text) {
    if (text == null) {
      return "null";
    }
    StringBuilder b = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        case '\r' -> b.append("\\r");
        case '\t' -> b.append("\\t");
        default -> {
          if (c < 0x20) {
            b.append(String.format("\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    return b.append('"').toString();
  }

  /** Answers for the code systems in OFFLINE: known to exist, codes not checkable here. */
  static final class OfflineCodeSystems implements IValidationSupport {
    private final FhirContext ctx;

    OfflineCodeSystems(FhirContext ctx) {
      this.ctx = ctx;
    }

    @Override
    public FhirContext getFhirContext() {
      return ctx;
    }

    @Override
    public boolean isCodeSystemSupported(ValidationSupportContext context, String system) {
      return OFFLINE.contains(system);
    }

    @Override
    public CodeValidationResult validateCode(
        ValidationSupportContext context,
        ConceptValidationOptions options,
        String system,
        String code,
        String display,
        String valueSetUrl) {
      if (!OFFLINE.contains(system) || valueSetUrl != null) {
        return null;
      }
      return new CodeValidationResult()
          .setCode(code)
          .setDisplay(display)
          .setSeverity(IssueSeverity.INFORMATION)
          .setMessage("Code system " + system + " is not available offline; code not checked");
    }

    @Override
    public boolean isValueSetSupported(ValidationSupportContext context, String valueSetUrl) {
      IBaseResource vs = context.getRootValidationSupport().fetchValueSet(valueSetUrl);
      return vs instanceof ValueSet v
          && v.getCompose().getInclude().stream().anyMatch(i -> OFFLINE.contains(i.getSystem()));
    }

    /**
     * A code of an offline system in a value set: checked against the concepts the value set
     * enumerates for that system; a value set including the whole system (or a filter of it)
     * cannot be checked offline, which is reported as information.
     */
    @Override
    public CodeValidationResult validateCodeInValueSet(
        ValidationSupportContext context,
        ConceptValidationOptions options,
        String system,
        String code,
        String display,
        IBaseResource valueSet) {
      if (!(valueSet instanceof ValueSet vs) || !OFFLINE.contains(system)) {
        return null;
      }
      boolean uncheckable = false;
      for (ValueSet.ConceptSetComponent include : vs.getCompose().getInclude()) {
        if (!system.equals(include.getSystem())) {
          continue;
        }
        if (include.getConcept().isEmpty()) {
          uncheckable = true;
        }
        for (ValueSet.ConceptReferenceComponent concept : include.getConcept()) {
          if (concept.getCode().equals(code)) {
            return new CodeValidationResult()
                .setCode(code)
                .setCodeSystemName(system)
                .setDisplay(concept.hasDisplay() ? concept.getDisplay() : display);
          }
        }
      }
      if (uncheckable) {
        return new CodeValidationResult()
            .setCode(code)
            .setSeverity(IssueSeverity.INFORMATION)
            .setMessage("Value set " + vs.getUrl() + " includes " + system
                + " by filter or whole; not checkable offline");
      }
      return new CodeValidationResult()
          .setSeverity(IssueSeverity.ERROR)
          .setMessage("Code " + system + "#" + code + " is not in value set " + vs.getUrl());
    }
  }
}
