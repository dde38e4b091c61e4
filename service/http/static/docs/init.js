// Swagger UI on this service's own document; "Authorize" takes the bearer token (see securitySchemes).
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  // No badge from validator.swagger.io: the page asks nothing of any other origin.
  validatorUrl: null,
});
